// Drives a DecodeEngine: runs step() while it has work and hands each event to the caller.
// kick() after add() or grant(); the loop stops by itself when nothing can make progress (all
// streams ended or waiting for credit), so an idle engine costs nothing.

import type { DecodeEngine, EngineEvent } from "./engine.js";

export class DecodeLoop {
  private active: Promise<void> | null = null;

  constructor(
    private readonly engine: DecodeEngine,
    private readonly onEvent: (e: EngineEvent) => void,
    /** A step that throws (a bug, not a model error: those come as "error" events). */
    private readonly onFatal: (err: unknown) => void = (err) => {
      throw err;
    },
  ) {}

  get running(): boolean {
    return this.active !== null;
  }

  kick(): void {
    if (this.active || !this.engine.hasWork) return;
    this.active = this.loop().finally(() => {
      this.active = null;
      // A stream added after the loop's last check but before this ran (from a continuation of
      // the event that ended the last stream) found the loop still active and did not start it.
      this.kick();
    });
  }

  /** Resolves once the loop has nothing left to do. */
  async idle(): Promise<void> {
    while (this.active) await this.active;
  }

  private async loop(): Promise<void> {
    try {
      while (this.engine.hasWork) {
        for (const e of await this.engine.step()) this.onEvent(e);
      }
    } catch (err) {
      this.onFatal(err);
    }
  }
}
