/**
 * An incremental Server-Sent Events parser (the WHATWG event-stream format): feed it
 * decoded text chunks as they arrive, split anywhere; it returns each complete event.
 * Comments (lines starting with ':') are returned too, since the Function URL sends its
 * heartbeats as comments.
 */

export interface SseEvent {
  /** `id:` field; undefined when the event had none. */
  id?: string;
  /** `event:` field; 'message' when absent, as in EventSource. */
  event: string;
  data: string;
}

export type SseItem = { kind: 'event'; event: SseEvent } | { kind: 'comment'; text: string };

export class SseParser {
  private buffer = '';
  private data: string[] = [];
  private hasData = false;
  private eventType = '';
  private id: string | undefined;
  private started = false;
  // The previous chunk ended in CR: a LF opening this one belongs to that line end.
  private afterCr = false;

  /** Parses `chunk`; returns the events and comments it completed, in order. */
  push(chunk: string): SseItem[] {
    if (this.afterCr && chunk.startsWith('\n')) chunk = chunk.slice(1);
    this.afterCr = false;
    let text = this.buffer + chunk;
    if (!this.started && text.length > 0) {
      this.started = true;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    const out: SseItem[] = [];
    let start = 0;
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      this.line(text.slice(start, i), out);
      if (c === 13) {
        if (i + 1 < text.length) {
          if (text.charCodeAt(i + 1) === 10) i++;
        } else {
          this.afterCr = true;
        }
      }
      start = i + 1;
    }
    this.buffer = text.slice(start);
    return out;
  }

  /** Call when the stream ends: an unterminated event is discarded, as the spec says. */
  end(): void {
    this.buffer = '';
    this.afterCr = false;
    this.reset();
  }

  private line(line: string, out: SseItem[]): void {
    if (line === '') {
      if (this.hasData) {
        const event: SseEvent = { event: this.eventType || 'message', data: this.data.join('\n') };
        if (this.id !== undefined) event.id = this.id;
        out.push({ kind: 'event', event });
      }
      this.reset();
      return;
    }
    if (line.startsWith(':')) {
      out.push({ kind: 'comment', text: line.slice(1).trim() });
      return;
    }
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    switch (field) {
      case 'data':
        this.data.push(value);
        this.hasData = true;
        break;
      case 'event':
        this.eventType = value;
        break;
      case 'id':
        if (!value.includes('\0')) this.id = value;
        break;
      default:
        break; // `retry` and unknown fields are ignored
    }
  }

  private reset(): void {
    this.data = [];
    this.hasData = false;
    this.eventType = '';
    this.id = undefined;
  }
}
