"""Structured answers from a language model: JSON constrained by a schema, bounded, validated, and
repaired at most once.

Every request is bounded three ways, so a small or wayward model cannot make a task run on:

- tokens: the answer is capped (`num_predict` / `max_tokens`) at `answer_token_cap(schema)`, the
  most tokens a schema-valid answer can need. The schemas the tasks send bound every string
  (`maxLength`), list (`maxItems`) and number, so a server that constrains decoding to the schema
  always finishes inside the cap;
- time: one deadline (the task's wall-clock budget) covers the first answer and the repair;
- context: the repair request carries the validation error and a bounded excerpt of the answer,
  never the whole answer, so it is no longer than the first request plus a fixed amount.

The answer is validated with a pydantic model that may be more lenient than the schema sent (it
accepts the near misses of servers that ignore the schema); `prepare` lets the task fix up, locally,
what a model cannot be trusted with before validation.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from harmonia.engines.ollama.client import (
    BudgetExceeded,
    Chunk,
    Completion,
    GenerationOptions,
    LLMClient,
    MalformedStream,
    Message,
)
from harmonia.errors import UpstreamError

T = TypeVar("T", bound=BaseModel)

REPAIR_EXCERPT_CHARS = 1200  # of the invalid answer, sent back with the error
_PROBLEM_CHARS = 600
# For `answer_token_cap`: characters per token inside strings and numbers (English runs ~4, JSON
# punctuation and the odd words a grammar forces fewer), tokens per key or list item (quotes, colon,
# comma and the whitespace a model puts between them), and defaults for an unbounded schema.
_CHARS_PER_TOKEN = 2.0
_TOKENS_PER_SLOT = 3
_UNBOUNDED_STRING = 200
_UNBOUNDED_ITEMS = 16
_UNBOUNDED_NUMBER = 12


class InvalidAnswer(UpstreamError):
    """The model's answer stayed invalid after the one repair request."""

    code = "invalid_answer"


def extract_json(text: str) -> dict[str, Any]:
    """The JSON object in an answer; tolerates a Markdown code fence or prose around the object."""
    body = text.strip()
    fenced = re.match(r"^```[a-zA-Z]*\s*(.*?)\s*```$", body, re.S)
    if fenced:
        body = fenced.group(1)
    try:
        value = json.loads(body)
    except json.JSONDecodeError:
        start, end = body.find("{"), body.rfind("}")
        if start < 0 or end <= start:
            raise ValueError(f"the answer is not JSON: {text[:120]!r}") from None
        try:
            value = json.loads(body[start : end + 1])
        except json.JSONDecodeError as exc:
            raise ValueError(f"the answer is not valid JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(value, dict):
        raise ValueError("the answer is JSON but not an object")
    return value


def answer_token_cap(schema: dict[str, Any]) -> int:
    """The most tokens a schema-valid answer needs: its longest form, counted generously."""
    chars, slots = _extent(schema, schema.get("$defs") or schema.get("definitions") or {})
    return math.ceil(chars / _CHARS_PER_TOKEN) + slots * _TOKENS_PER_SLOT + 8


def _extent(schema: Any, defs: dict[str, Any]) -> tuple[int, int]:
    """(characters of content, keys and items) of the longest value `schema` allows."""
    if not isinstance(schema, dict):
        return _UNBOUNDED_STRING, 1
    if "$ref" in schema:
        return _extent(defs.get(str(schema["$ref"]).rsplit("/", 1)[-1], {}), defs)
    if "const" in schema:
        return len(json.dumps(schema["const"])), 0
    if "enum" in schema:
        return max((len(json.dumps(v)) for v in schema["enum"]), default=4), 0
    options = schema.get("anyOf") or schema.get("oneOf")
    if options:
        return max((_extent(o, defs) for o in options), default=(4, 0))
    kind = schema.get("type")
    if isinstance(kind, list):
        return max((_extent({**schema, "type": k}, defs) for k in kind), default=(4, 0))
    if kind == "object":
        chars, slots = 0, 0
        for key, sub in (schema.get("properties") or {}).items():
            c, s = _extent(sub, defs)
            chars, slots = chars + len(key) + c, slots + s + 1
        return chars, slots
    if kind == "array":
        chars, slots = 0, 0
        prefix = schema.get("prefixItems") or []
        for sub in prefix:
            c, s = _extent(sub, defs)
            chars, slots = chars + c, slots + s + 1
        rest = max(int(schema.get("maxItems", len(prefix) or _UNBOUNDED_ITEMS)) - len(prefix), 0)
        if rest and schema.get("items") is not False:
            c, s = _extent(schema.get("items", {}), defs)
            chars, slots = chars + rest * c, slots + rest * (s + 1)
        return chars, slots
    if kind == "string":
        return int(schema.get("maxLength", _UNBOUNDED_STRING)) + 2, 0
    if kind == "integer" and "minimum" in schema and "maximum" in schema:
        return max(len(str(int(schema["minimum"]))), len(str(int(schema["maximum"])))), 0
    if kind in ("integer", "number"):
        return _UNBOUNDED_NUMBER, 0
    if kind in ("boolean", "null"):
        return 5, 0
    return _UNBOUNDED_STRING, 1


def describe_problem(exc: Exception) -> str:
    """A validation error as one short line the model (and a person) can act on."""
    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors()[:6]:
            where = ".".join(str(p) for p in err["loc"]) or "answer"
            parts.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
        text = "; ".join(parts)
    else:
        text = str(exc)
    return text if len(text) <= _PROBLEM_CHARS else text[: _PROBLEM_CHARS - 1] + "…"


def excerpt(answer: str, limit: int = REPAIR_EXCERPT_CHARS) -> str:
    """The answer as the repair request quotes it: compact JSON when it parses, cut to `limit`."""
    text = answer.strip()
    try:
        text = json.dumps(json.loads(text), ensure_ascii=False, separators=(",", ":"))
    except ValueError:
        pass
    return text if len(text) <= limit else text[:limit] + " …(cut)"


def ask_structured(
    client: LLMClient,
    messages: list[Message],
    model_cls: type[T],
    *,
    what: str,
    schema: dict[str, Any] | None = None,
    model: str | None = None,
    options: GenerationOptions | None = None,
    prepare: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    on_chunk: Callable[[Chunk], None] | None = None,
    budget_s: float | None = None,
) -> tuple[T, Completion, int]:
    """Ask for JSON matching `schema` (default: `model_cls`'s), validate it with `model_cls` after
    `prepare`, repair once; return (value, completion, attempts). Raises `InvalidAnswer`, or
    `BudgetExceeded` when `budget_s` runs out first."""
    schema = schema or model_cls.model_json_schema()
    options = options or GenerationOptions()
    if options.num_predict is None:
        options = options.model_copy(update={"num_predict": answer_token_cap(schema)})
    deadline = time.monotonic() + budget_s if budget_s is not None else None
    convo = list(messages)
    problem = ""
    for attempt in (1, 2):
        try:
            completion = client.chat(
                convo, model=model, format=schema, options=options, on_chunk=on_chunk, deadline=deadline
            )
        except MalformedStream as exc:
            problem = str(exc)  # nothing usable came back, so the repair is asking the same again
            continue
        except BudgetExceeded as exc:
            after = f" (the first answer was invalid: {problem})" if problem else ""
            raise BudgetExceeded(
                f"the {what} was not ready within its {budget_s:g} s budget: {exc}{after}"
            ) from exc
        try:
            data = extract_json(completion.text)
            value = model_cls.model_validate(prepare(data) if prepare else data)
            return value, completion, attempt
        except ValueError as exc:  # JSONDecodeError and ValidationError are ValueErrors
            problem = describe_problem(exc)
            if completion.done_reason == "length":
                problem += " (the answer was cut off at the token limit; answer more briefly)"
        convo = [
            *messages,
            {"role": "assistant", "content": excerpt(completion.text)},
            {
                "role": "user",
                "content": f"That answer is invalid: {problem}. Answer again with only the corrected "
                "JSON object.",
            },
        ]
    raise InvalidAnswer(f"the model's {what} was invalid after one repair: {problem}")
