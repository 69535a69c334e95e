// Short plain-text responses (errors, redirects) shared by the HTTP handlers.

import { STATUS_CODES, type OutgoingHttpHeaders, type ServerResponse } from 'node:http';

/** Ends `res` with `status` and a one-line text body (its reason phrase unless given). */
export function sendText(res: ServerResponse, status: number, text?: string, headers: OutgoingHttpHeaders = {}): void {
  const body = `${text ?? STATUS_CODES[status] ?? 'Error'}\n`;
  res.writeHead(status, {
    'Content-Type': 'text/plain; charset=utf-8',
    'Content-Length': Buffer.byteLength(body),
    'X-Content-Type-Options': 'nosniff',
    ...headers,
  });
  res.end(body);
}
