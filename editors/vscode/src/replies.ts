// What the server's command replies mean for the user. The server shows its own messages
// (window/showMessage) for errors, apply and undo; these helpers read the replies' parts the
// extension acts on. No `vscode` import.

/** The message of an {"error": message} reply, else undefined. */
export function serverError(reply: unknown): string | undefined {
  const error = (reply as { error?: unknown } | null)?.error;
  return typeof error === "string" ? error : undefined;
}

/** The repository-relative files an apply or undo reply ({"applied"|"undone", "files"}) names. */
export function changedFiles(reply: unknown): string[] {
  const files = (reply as { files?: unknown } | null)?.files;
  return Array.isArray(files) ? files.filter((file): file is string => typeof file === "string") : [];
}

/** One line about a finished `sera.specialize` ({"run", "adapter", "report"}). */
export function specializeSummary(reply: unknown): string {
  const { run, adapter } = (reply ?? {}) as { run?: unknown; adapter?: unknown };
  const trained = typeof adapter === "string" && adapter !== ""
    ? `adapter ${adapter} is trained; Sera: Solve uses it from now on`
    : "no adapter was trained (see the report)";
  return `sera: specialize run ${String(run)} finished: ${trained}`;
}

/** The report text of a `sera.specialize` reply, or "" when it has none. */
export function specializeReport(reply: unknown): string {
  const report = (reply as { report?: unknown } | null)?.report;
  return typeof report === "string" ? report : "";
}

/** The message for a command request the server failed (a JSON-RPC error, not an {"error"} reply). */
export function requestFailure(command: string, message: string): string {
  const unknown = /not defined|not found|unknown command|unhandled method/i.test(message);
  const remedy = unknown
    ? `this sera has no ${command} command: update sera to the version this extension is built for`
    : "the \"sera\" output channel has the server's log";
  return `sera: ${command} failed: ${message}; ${remedy}`;
}
