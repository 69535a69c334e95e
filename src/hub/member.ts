// What the hub needs from a connected client. The network layer implements it; the hub never
// sees sockets.

import type { CloseReason } from '../protocol/close-codes.js';
import type { Message } from '../store/store.js';

export interface Member {
  readonly uid: string;
  /** Claims to be a peer server's link (spec section 8): its repeats are dropped; its join stays out of history only with a MLES_PEER_KEY proof. */
  readonly peer?: boolean;
  /** False once the member has left; the hub stops delivering to it. */
  readonly open: boolean;
  /** Queues a message for sending. Must not throw and must not call back into the hub. */
  deliver(message: Message): void;
  /**
   * Queues a join's history ahead of every later delivery. The member may send it as fast as its
   * client reads; `history` may be shared with other joiners and must not be changed.
   */
  replay(history: readonly Message[]): void;
  /** Ends the member's connection (e.g. when its history could not be read). */
  close(reason: CloseReason): void;
}
