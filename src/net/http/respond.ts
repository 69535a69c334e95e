// Short plain-text and JSON responses (errors, redirects, API answers) shared by the HTTP handlers.

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

/**
 * Ends `res` with `value` as JSON. Never cached: what it reports (presence, channels, history)
 * changes from one second to the next. A HEAD request gets the headers only.
 */
export function sendJson(res: ServerResponse, status: number, value: unknown, headers: OutgoingHttpHeaders = {}): void {
  const body = JSON.stringify(value) + '\n';
  res.writeHead(status, {
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': Buffer.byteLength(body),
    'Cache-Control': 'no-store',
    'X-Content-Type-Options': 'nosniff',
    ...headers,
  });
  res.end(res.req?.method === 'HEAD' ? undefined : body);
}
