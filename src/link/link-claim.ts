// One node's claim on a channel's links of a kind (Hub.claimLinks): on a cluster one node at a
// time holds them, so each message crosses once. A node that wants them while another node holds
// them asks again every `retryMs`, so they move on when the holder lets go (its users left, it
// stopped) or dies (its registry key expires). On a single node every claim is won at once.
// Peer links (src/link/peers.ts) and the MQTT bridge (src/link/mqtt-bridge.ts) follow claims so.

import type { Logger } from 'pino';
import type { Hub, LinkKind } from '../hub/hub.js';
import type { MaybePromise } from '../store/store.js';

export class LinkClaim {
  private held = false;
  private released = false;
  /** Asking again until won (peer links, a channel with users) rather than once. */
  private following = false;
  private answer: Promise<boolean> | undefined;
  private retry: NodeJS.Timeout | undefined;

  constructor(
    private readonly hub: Hub,
    readonly channel: string,
    private readonly kind: LinkKind,
    private readonly retryMs: number,
    /** Called once, when this node takes the claim (before `ask` resolves true). */
    private readonly won: () => void,
    private readonly log: Logger,
    /** Called when an answer is no (another node holds the claim). */
    private readonly lost: () => void = () => {},
  ) {}

  get holds(): boolean {
    return this.held;
  }

  /** True while the registry's answer is on its way. */
  get asking(): boolean {
    return this.answer !== undefined;
  }

  /** Asks until this node holds the claim. */
  follow(): void {
    this.following = true;
    void this.ask();
  }

  /** Asks now, rather than at the next retry; whether this node holds the claim then. */
  ask(): Promise<boolean> {
    if (this.held || this.released) return Promise.resolve(this.held);
    if (this.answer) return this.answer;
    clearTimeout(this.retry);
    let answer: MaybePromise<boolean>;
    try {
      answer = this.hub.claimLinks(this.channel, this.kind);
    } catch (error) {
      answer = Promise.reject(error);
    }
    // A single node's answer is at once: the links are there before the channel's next message.
    if (typeof answer === 'boolean') return Promise.resolve(this.answered(answer));
    this.answer = answer.catch((error: unknown) => {
      this.log.warn({ err: error, channel: this.channel, kind: this.kind }, 'links not claimed');
      return false;
    }).then((won) => {
      this.answer = undefined;
      return this.answered(won);
    });
    return this.answer;
  }

  private answered(won: boolean): boolean {
    if (won && this.released) this.hub.releaseLinks(this.channel, this.kind); // let go meanwhile
    else if (won) {
      this.held = true;
      this.won();
    } else if (!this.released) {
      this.lost();
      if (this.following) {
        this.retry = setTimeout(() => void this.ask(), this.retryMs);
        this.retry.unref();
      }
    }
    return this.held;
  }

  /** Stops asking and lets go of the claim (once answered, if it is still on its way). */
  release(): void {
    if (this.released) return;
    this.released = true;
    clearTimeout(this.retry);
    if (this.held) this.hub.releaseLinks(this.channel, this.kind);
    this.held = false;
  }
}
