// The status bar text for the server's $/progress (work done progress) notifications: the latest
// message of a progress that has begun and not ended. No `vscode` import.

import { shorten } from "./text";

export type ProgressToken = string | number;

export type ProgressValue =
  | { kind: "begin"; title: string; message?: string; cancellable?: boolean; percentage?: number }
  | { kind: "report"; message?: string; cancellable?: boolean; percentage?: number }
  | { kind: "end"; message?: string };

const STATUS_CHARS = 80;

interface Running {
  title: string;
  message: string | undefined;
}

export class ProgressStatus {
  /** Progress that began and has not ended, by token; the latest updated one is last. */
  private readonly running = new Map<ProgressToken, Running>();

  update(token: ProgressToken, value: ProgressValue): void {
    if (value.kind === "end") {
      this.running.delete(token);
      return;
    }
    const before = this.running.get(token);
    const title = value.kind === "begin" ? value.title : before?.title ?? "";
    this.running.delete(token);
    this.running.set(token, { title, message: value.message ?? before?.message });
  }

  /** Forget all progress, e.g. when the server stopped without ending its progress. */
  clear(): void {
    this.running.clear();
  }

  private latest(): Running | undefined {
    return [...this.running.values()].pop();
  }

  /** "sera: <latest message>", or undefined when nothing is in progress (hide the item). */
  get text(): string | undefined {
    const latest = this.latest();
    if (latest === undefined) {
      return undefined;
    }
    const words = latest.message ?? latest.title.replace(/^sera:\s*/, "");
    return `sera: ${shorten(words, STATUS_CHARS)}`;
  }

  /** The title (the task) and the full latest message, for hovering over the item. */
  get tooltip(): string | undefined {
    const latest = this.latest();
    if (latest === undefined) {
      return undefined;
    }
    return [latest.title, latest.message, "Click to cancel (Sera: Cancel)"].filter(Boolean).join("\n");
  }
}
