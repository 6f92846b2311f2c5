// What the server's command replies mean for the extension. The server shows its own messages
// (window/showMessage) for errors and outcomes, so the extension only tells an {"error"} reply
// from a result, and words a request the server failed. No `vscode` import.

/** The message of an {"error": message} reply, else undefined. */
export function serverError(reply: unknown): string | undefined {
  const error = (reply as { error?: unknown } | null)?.error;
  return typeof error === "string" ? error : undefined;
}

/** The message for a command request the server failed (a JSON-RPC error, not an {"error"} reply). */
export function requestFailure(command: string, message: string): string {
  const unknown = /not defined|not found|unknown command|unhandled method/i.test(message);
  const remedy = unknown
    ? `this sera has no ${command} command: update sera to the version this extension is built for`
    : "the \"sera\" output channel has the server's log";
  return `sera: ${command} failed: ${message}; ${remedy}`;
}
