// WebSocket close codes (RFC 6455 section 7.4) and the reasons Mles sends with them, so that
// clients and logs can tell why a connection ended. The 4xxx codes are ours (application range).

export const CloseCode = {
  normal: 1000,
  goingAway: 1001,
  protocolError: 1002,
  unsupportedData: 1003,
  invalidPayload: 1007,
  policyViolation: 1008,
  messageTooBig: 1009,
  internalError: 1011,
  tryAgainLater: 1013,
  duplicateSession: 4409,
} as const;

export type CloseCodeValue = (typeof CloseCode)[keyof typeof CloseCode];

/** Why the server ends a connection: a close code and a short reason (at most 123 bytes). */
export interface CloseReason {
  code: CloseCodeValue;
  reason: string;
}

export const Close = {
  shutdown: { code: CloseCode.goingAway, reason: 'server shutting down' },
  pingTimeout: { code: CloseCode.goingAway, reason: 'ping timeout' },
  joinTimeout: { code: CloseCode.policyViolation, reason: 'no join frame in time' },
  binaryJoin: { code: CloseCode.unsupportedData, reason: 'first frame must be text' },
  joinTooBig: { code: CloseCode.messageTooBig, reason: 'join frame too big' },
  authFailed: { code: CloseCode.policyViolation, reason: 'auth failed' },
  duplicate: { code: CloseCode.duplicateSession, reason: 'uid already joined' },
  historyUnavailable: { code: CloseCode.internalError, reason: 'history unavailable' },
  notStored: { code: CloseCode.internalError, reason: 'history unavailable: a message was not stored' },
  slowConsumer: { code: CloseCode.tryAgainLater, reason: 'slow consumer: send buffer full' },
  pingFlood: { code: CloseCode.policyViolation, reason: 'too many pings while not reading' },
  operator: { code: CloseCode.policyViolation, reason: 'disconnected by an operator' },
} as const satisfies Record<string, CloseReason>;

export function invalidJoin(what: string): CloseReason {
  return { code: CloseCode.invalidPayload, reason: `invalid join frame: ${what}` };
}
