// The node's tokenizer is the shared one in protocol/ (the edge checks uploaded tokenizer.json
// files with the same code); this module keeps the node's import path.
export * from "../formats/tokenizer.js";
