// A text/event-stream parser (the WHATWG "event stream interpretation" rules) fed in arbitrary
// chunks, for reading SSE through fetch(): lines end in CRLF, LF or CR, even split across chunks;
// comments (": ping") are skipped; an event is dispatched at a blank line when it has data.

export function createParser(onEvent) {
  let buffer = "";
  let data = [];
  let eventType = "";
  let lastId = "";
  let pendingCR = false; // a chunk ended in "\r": a following "\n" belongs to the same line end

  function line(text) {
    if (text === "") {
      if (data.length) onEvent({ id: lastId, event: eventType || "message", data: data.join("\n") });
      data = [];
      eventType = "";
      return;
    }
    if (text.startsWith(":")) return;
    const colon = text.indexOf(":");
    const field = colon < 0 ? text : text.slice(0, colon);
    let value = colon < 0 ? "" : text.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") data.push(value);
    else if (field === "event") eventType = value;
    else if (field === "id" && !value.includes("\0")) lastId = value;
    // "retry" and unknown fields: reconnection is the caller's business
  }

  return {
    feed(chunk) {
      if (pendingCR && chunk.startsWith("\n")) chunk = chunk.slice(1);
      pendingCR = false;
      buffer += chunk;
      let start = 0;
      for (let i = 0; i < buffer.length; i++) {
        const ch = buffer[i];
        if (ch !== "\n" && ch !== "\r") continue;
        line(buffer.slice(start, i));
        if (ch === "\r") {
          if (i + 1 === buffer.length) pendingCR = true;
          else if (buffer[i + 1] === "\n") i++;
        }
        start = i + 1;
      }
      buffer = buffer.slice(start);
    },
    end() {
      // an unterminated last line is dropped, as the spec says for a stream that ends mid-event
      buffer = "";
      data = [];
    },
    get lastEventId() {
      return lastId;
    },
  };
}
