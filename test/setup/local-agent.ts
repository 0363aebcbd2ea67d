// Every test's plain fetch keeps idle connections shorter than the local edge (workerd) does:
// local/keep-alive.ts says why.
import { useLocalAgent } from "../../local/keep-alive.js";

useLocalAgent();
