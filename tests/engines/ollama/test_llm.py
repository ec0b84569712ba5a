"""The LLM client against the fake Ollama daemon (a real HTTP server), or a real daemon when
HARMONIA_TEST_OLLAMA_URL is set; tests that need scripted answers or misbehaviour skip there."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from fake_ollama import Answer, FakeOllama, closed_port_url, real_ollama
from harmonia.config import OllamaSettings
from harmonia.engines.ollama.backends import OllamaClient, OpenAIClient, build_llm_client
from harmonia.engines.ollama.client import (
    BudgetExceeded,
    Chunk,
    ContextOverflow,
    GenerationOptions,
    LLMTimeout,
    MalformedStream,
    ModelMissing,
)
from harmonia.errors import DependencyDown, EngineError, JobCanceled, RetryableError

REAL = real_ollama()
MISSING = "harmonia-no-such-model:0b"
HI = [{"role": "user", "content": "Say hello in one word."}]


@pytest.fixture
def url(daemon: FakeOllama | None) -> str:
    if daemon is not None:
        daemon.reset()
    return REAL[0] if REAL else daemon.url  # type: ignore[union-attr]


@pytest.fixture
def model() -> str:
    return REAL[1] if REAL else "llama3.2"


@pytest.fixture
def client(url: str, model: str) -> Iterator[OllamaClient]:
    with OllamaClient(url, model, timeout_s=120 if REAL else 5, retry_wait_s=0.01) as c:
        yield c


class FlakyTransport(httpx.BaseTransport):
    """A real transport whose first `failures` connection attempts are refused."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts = 0
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise httpx.ConnectError("connection refused (scripted)", request=request)
        return self.inner.handle_request(request)


# --- against either daemon ----------------------------------------------------------------------


def test_version_tags_and_readiness(client: OllamaClient, model: str) -> None:
    assert client.version()
    names = client.list_models()
    assert any(n.split(":")[0] == model.split(":")[0] for n in names)
    ready = client.check_ready()
    assert ready["model"] == model and ready["backend"] == "ollama"


def test_chat_returns_text_stop_reason_and_stats(client: OllamaClient, daemon: FakeOllama | None) -> None:
    if daemon is not None:
        daemon.push("Hello there, traveller.")
    result = client.chat(HI, options=GenerationOptions(temperature=0, seed=1, num_predict=64))
    assert result.text.strip()
    assert result.done_reason in ("stop", "length")
    assert result.stats["completion_tokens"] > 0
    assert result.stats["total_s"] > 0


def test_structured_answer_follows_the_schema(client: OllamaClient, daemon: FakeOllama | None) -> None:
    schema = {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]}
    if daemon is not None:
        daemon.push('{"word": "hello"}')
    result = client.chat(HI, format=schema, options=GenerationOptions(temperature=0, seed=3))
    assert isinstance(json.loads(result.text)["word"], str)


def test_model_not_pulled_names_the_pull_command(url: str) -> None:
    with OllamaClient(url, MISSING) as c, pytest.raises(ModelMissing) as info:
        c.chat(HI)
    assert f"ollama pull {MISSING}" in str(info.value)
    assert info.value.model == MISSING and info.value.url == url
    with OllamaClient(url, MISSING) as c, pytest.raises(ModelMissing):
        c.check_ready()


def test_daemon_down_names_the_url_after_retrying() -> None:
    down = closed_port_url()
    with (
        OllamaClient(down, "llama3.2", retry_attempts=3, retry_wait_s=0.01) as c,
        pytest.raises(DependencyDown) as info,
    ):
        c.chat(HI)
    assert down in str(info.value)


def test_connection_errors_are_retried_then_succeed(url: str, model: str) -> None:
    transport = FlakyTransport(failures=2)
    with httpx.Client(transport=transport) as http:
        c = OllamaClient(url, model, http=http, retry_attempts=3, retry_wait_s=0.01)
        assert c.version()
    assert transport.attempts == 3


def test_retries_stop_after_the_configured_attempts(url: str, model: str) -> None:
    transport = FlakyTransport(failures=10)
    with httpx.Client(transport=transport) as http:
        c = OllamaClient(url, model, http=http, retry_attempts=4, retry_wait_s=0.01)
        with pytest.raises(DependencyDown, match=url):
            c.list_models()
    assert transport.attempts == 4


def test_cancel_between_chunks_closes_the_stream(client: OllamaClient, daemon: FakeOllama | None) -> None:
    if daemon is not None:
        daemon.push("one two three four five six seven eight nine ten")
    seen: list[Chunk] = []

    def stop_after_two(chunk: Chunk) -> None:
        seen.append(chunk)
        if len(seen) == 2:
            raise JobCanceled("canceled by the user")

    with pytest.raises(JobCanceled):
        client.chat(
            [{"role": "user", "content": "Count from one to fifty in words."}], on_chunk=stop_after_two
        )
    assert len(seen) == 2
    if daemon is not None:
        daemon.push("still serving")
    assert client.chat(HI).text  # the connection was released, the client still works


# --- scripted protocol details and misbehaviour (fake daemon only) -------------------------------


def test_stream_arrives_in_pieces_with_a_final_done_message(fake: FakeOllama, client: OllamaClient) -> None:
    fake.push("The quick brown fox jumps over the lazy dog.")
    chunks = list(client.stream_chat(HI))
    assert len(chunks) > 3
    assert [c.done for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert "".join(c.text for c in chunks) == "The quick brown fox jumps over the lazy dog."
    final = chunks[-1]
    assert final.done_reason == "stop"
    assert set(final.stats) >= {"prompt_tokens", "completion_tokens", "total_s", "load_s", "eval_s"}
    sent = fake.generations()[-1]
    assert sent.path == "/api/chat" and sent.body["stream"] is True and sent.body["messages"] == HI


def test_generate_sends_prompt_and_system(fake: FakeOllama, client: OllamaClient) -> None:
    fake.push("a bright synth-pop tune")
    result = client.generate("an idea", system="be brief")
    assert result.text == "a bright synth-pop tune"
    sent = fake.generations()[-1]
    assert sent.path == "/api/generate"
    assert sent.body["prompt"] == "an idea" and sent.body["system"] == "be brief"


def test_schema_options_and_keep_alive_are_sent(fake: FakeOllama, url: str) -> None:
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}}
    fake.push('{"x": 1}')
    with OllamaClient(url, "llama3.2", keep_alive="10m") as c:
        c.chat(HI, format=schema, options=GenerationOptions(temperature=0.2, seed=7, num_ctx=4096))
        body = fake.generations()[-1].body
        assert body["format"] == schema
        assert body["options"] == {"temperature": 0.2, "seed": 7, "num_ctx": 4096}
        assert body["keep_alive"] == "10m"
        fake.push("ok")
        c.chat(HI, keep_alive=0)
        assert fake.generations()[-1].body["keep_alive"] == 0


def test_token_limit_reports_length(fake: FakeOllama, client: OllamaClient) -> None:
    fake.push("x" * 100)
    result = client.chat(HI, options=GenerationOptions(num_predict=3))
    assert result.done_reason == "length" and len(result.text) < 100


@pytest.mark.parametrize(
    ("mode", "error", "text"),
    [
        ("malformed", MalformedStream, "not JSON"),
        ("cut", MalformedStream, "broke off"),
        ("no_done", MalformedStream, "without its final message"),
        ("error", EngineError, "error was encountered while running the model"),
    ],
)
def test_broken_streams_are_clear_errors(
    fake: FakeOllama, client: OllamaClient, mode: str, error: type[Exception], text: str
) -> None:
    fake.push(Answer("a long enough answer to be cut in the middle", mode=mode))  # type: ignore[arg-type]
    with pytest.raises(error, match=text):
        client.chat(HI)


def test_server_errors_are_not_retried(fake: FakeOllama, client: OllamaClient) -> None:
    fake.push(Answer(mode="status", status=500, error="model requires more system memory"))
    with pytest.raises(EngineError, match="more system memory"):
        client.chat(HI)
    fake.push(Answer(mode="status", status=503, error="server busy, please try again"))
    with pytest.raises(RetryableError, match="busy"):
        client.chat(HI)
    assert len(fake.generations()) == 2  # one request each: only connection errors are retried


def test_slow_daemon_times_out(fake: FakeOllama, url: str) -> None:
    fake.push(Answer("slow answer here", mode="slow", delay_s=1.5))
    with OllamaClient(url, "llama3.2", timeout_s=0.3) as c, pytest.raises(LLMTimeout, match=r"0\.3 s"):
        c.chat(HI)


LLAMA_CPP_OVERFLOW = (
    "request (5031 tokens) exceeds the available context size (4096 tokens), try increasing it"
)


@pytest.mark.parametrize("backend", [OllamaClient, OpenAIClient])
@pytest.mark.parametrize("mode", ["status", "error"])
def test_context_overflow_is_its_own_error(
    fake: FakeOllama, url: str, backend: type[OllamaClient], mode: str
) -> None:
    # as an error status (llama.cpp, vLLM) and as an error in the stream; the real server shows the
    # status form in tests/engines/ollama/test_llm_real.py
    fake.push(Answer("some answer text to break", mode=mode, status=400, error=LLAMA_CPP_OVERFLOW))  # type: ignore[arg-type]
    with backend(url, "llama3.2") as c, pytest.raises(ContextOverflow) as info:
        c.chat(HI)
    assert info.value.code == "context_overflow"
    assert "4096 tokens" in str(info.value) and "larger context" in str(info.value)


def test_deadline_cuts_the_wait_for_the_answer(fake: FakeOllama, url: str) -> None:
    fake.push(Answer("slow answer here", mode="slow", delay_s=2.0))
    with OllamaClient(url, "llama3.2", timeout_s=30) as c:
        started = time.monotonic()
        with pytest.raises(BudgetExceeded, match="had not started answering"):
            c.chat(HI, deadline=started + 0.4)
        assert time.monotonic() - started < 1.0  # the 30 s read timeout did not apply


@pytest.mark.parametrize("backend", [OllamaClient, OpenAIClient])
def test_deadline_hangs_up_a_stream_that_stalls(
    fake: FakeOllama, url: str, backend: type[OllamaClient]
) -> None:
    # a server that stops mid-answer: no chunk arrives to check the deadline at, so the client must
    # hang up itself (a real server cannot be made to stall on cue)
    fake.push(Answer("the first half arrives, then nothing for a long while", mode="stall", delay_s=5.0))
    seen: list[Chunk] = []
    with backend(url, "llama3.2", timeout_s=30) as c:
        started = time.monotonic()
        with pytest.raises(BudgetExceeded, match="was still answering"):
            c.chat(HI, deadline=started + 0.6, on_chunk=seen.append)
        assert 0.6 <= time.monotonic() - started < 1.5
        assert seen  # it was answering
        fake.push("still serving")
        assert c.chat(HI).text == "still serving"


def test_model_missing_names_what_the_server_serves(url: str) -> None:
    with FakeOllama(models=("llama3.2:latest", "qwen2.5:0.5b")) as daemon:
        with OllamaClient(daemon.url, "mistral") as c, pytest.raises(ModelMissing) as info:
            c.check_ready()
        message = str(info.value)
        assert "it serves 'llama3.2:latest', 'qwen2.5:0.5b'" in message
        assert "ollama pull mistral" in message and "HARMONIA_OLLAMA__MODEL" in message
        assert info.value.served == ["llama3.2:latest", "qwen2.5:0.5b"]
        with OpenAIClient(daemon.url, "mistral") as c, pytest.raises(ModelMissing) as info:
            c.chat(HI)  # the chat's 404, then the listing for the message
        assert "it serves 'llama3.2:latest'" in str(info.value) and "--alias mistral" in str(info.value)


def test_bearer_token_is_sent() -> None:
    with FakeOllama(token="s3cret") as guarded:
        with OllamaClient(guarded.url, "llama3.2") as c, pytest.raises(DependencyDown, match="401"):
            c.list_models()
        with OllamaClient(guarded.url, "llama3.2", token="s3cret") as c:
            assert c.list_models() == ["llama3.2:latest"]
        assert guarded.requests[-1].headers["authorization"] == "Bearer s3cret"


def test_not_an_ollama_server(fake: FakeOllama, url: str) -> None:
    with OllamaClient(url + "/nothing-here", "llama3.2") as c, pytest.raises(DependencyDown, match="404"):
        c.list_models()


# --- the OpenAI-compatible backend --------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", "/v1"])
def test_openai_backend_chat(url: str, model: str, daemon: FakeOllama | None, suffix: str) -> None:
    if daemon is not None:
        daemon.push('{"word": "hi"}')
    schema = {
        "type": "object",
        "title": "Word",
        "properties": {"word": {"type": "string"}},
        "required": ["word"],
    }
    with OpenAIClient(url + suffix, model, timeout_s=120 if REAL else 5) as c:
        result = c.chat(HI, format=schema, options=GenerationOptions(temperature=0, seed=2, num_predict=64))
        assert isinstance(json.loads(result.text)["word"], str)
        assert result.done_reason in ("stop", "length")
        assert result.stats["prompt_tokens"] > 0
        assert any(m.split(":")[0] == model.split(":")[0] for m in c.list_models())
    if daemon is not None:
        body = daemon.generations()[-1].body
        assert body["response_format"] == {
            "type": "json_schema",
            "json_schema": {"name": "Word", "schema": schema, "strict": False},
        }
        assert body["max_tokens"] == 64 and body["seed"] == 2 and body["stream"] is True
        assert "keep_alive" not in body and "options" not in body


def test_openai_backend_model_missing(url: str) -> None:
    with OpenAIClient(url, MISSING) as c, pytest.raises(ModelMissing, match=f"ollama pull {MISSING}"):
        c.chat(HI)


def test_openai_stream_pieces(fake: FakeOllama, url: str) -> None:
    fake.push("streamed over server-sent events")
    with OpenAIClient(url, "llama3.2") as c:
        chunks = list(c.stream_chat(HI))
    assert len(chunks) > 2 and chunks[-1].done and chunks[-1].done_reason == "stop"
    assert "".join(ch.text for ch in chunks) == "streamed over server-sent events"
    assert chunks[-1].stats == {"prompt_tokens": 11, "completion_tokens": len(chunks) - 1}


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        ("malformed", MalformedStream),
        ("cut", MalformedStream),
        ("no_done", MalformedStream),
        ("error", EngineError),
    ],
)
def test_openai_broken_streams(fake: FakeOllama, url: str, mode: str, error: type[Exception]) -> None:
    fake.push(Answer("a long enough answer to be cut in the middle", mode=mode))  # type: ignore[arg-type]
    with OpenAIClient(url, "llama3.2") as c, pytest.raises(error):
        c.chat(HI)


def test_client_from_settings(fake: FakeOllama, url: str) -> None:
    fake.push("hello")
    ollama = build_llm_client(OllamaSettings(url=url, model="llama3.2", timeout_s=5))
    assert isinstance(ollama, OllamaClient) and ollama.chat(HI).text == "hello"
    ollama.close()
    openai = build_llm_client(OllamaSettings(url=url + "/v1", api="openai", token="t0k", timeout_s=5))
    fake.push("hi")
    assert isinstance(openai, OpenAIClient) and openai.chat(HI).text == "hi"
    assert fake.generations()[-1].headers["authorization"] == "Bearer t0k"
    openai.close()
