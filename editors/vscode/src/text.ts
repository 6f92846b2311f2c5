// Small text helpers shared by the pure modules.

/** `text` on one line, cut to `chars` characters with an ellipsis. */
export function shorten(text: string, chars: number): string {
  const oneLine = text.split(/\s+/).filter(Boolean).join(" ");
  return oneLine.length <= chars ? oneLine : `${oneLine.slice(0, chars - 1)}\u2026`;
}
