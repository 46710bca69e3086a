"""Form uploads through the official openai SDK against a live server: the SDK picks a new
multipart boundary for every request, the cassette (tests/cassettes/forms/openai-python.yaml)
holds another one, and the recording is still found. A urlencoded form sent in another order
and spelling is found too.

The cassette holds what the SDK sent (captured from it against a stand-in provider), with its
boundary replaced, and provider-shaped answers.
"""

from __future__ import annotations

import base64
import io
import wave
from collections.abc import Iterator

import httpx
import openai
import pytest

from server import Settings
from server.matching.forms import parse_content_type

from .conftest import ROOT, live_server

FORM_CASSETTES = ROOT / "tests" / "cassettes" / "forms"
RECORDED_BOUNDARY = "cassette-recorded-boundary-0001"  # the one in the cassette's bodies and headers
SPEECH_TEXT = "Hello from the recording."


def _speech() -> bytes:
    """A hundredth of a second of 8 kHz silence, as a WAV file (the wave module writes it the same
    way every time)."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(8000)
        writer.writeframes(b"\x00\x00" * 80)
    return buffer.getvalue()


SPEECH = _speech()
CAT = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


class Boundaries:
    """Remembers the multipart boundary of every request the SDK sends."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def __call__(self, request: httpx.Request) -> None:
        media_type, parameters = parse_content_type(request.headers.get("content-type", ""))
        if media_type == "multipart/form-data":
            self.sent.append(parameters["boundary"])


def sdk(base_url: str, boundaries: Boundaries | None = None) -> openai.OpenAI:
    hooks = {"request": [boundaries]} if boundaries else {}
    return openai.OpenAI(base_url=base_url, api_key="test", max_retries=0, http_client=httpx.Client(event_hooks=hooks))


def transcribe(base_url: str, boundaries: Boundaries | None = None, audio: bytes = SPEECH) -> str:
    with sdk(base_url, boundaries) as client:
        return client.audio.transcriptions.create(file=("speech.wav", audio, "audio/wav"), model="whisper-1").text


def edit_image(base_url: str, boundaries: Boundaries | None = None) -> list[str | None]:
    with sdk(base_url, boundaries) as client:
        edited = client.images.edit(image=("cat.png", CAT, "image/png"), prompt="Give the cat a red hat", model="gpt-image-1")
        return [image.b64_json for image in edited.data or []]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with live_server(Settings(paths=(FORM_CASSETTES,), speed=0)) as (url, app):
        assert app.service.loaded.result.errors == []
        yield url


def test_audio_transcription_replays_whatever_boundary_the_sdk_picks(server: str) -> None:
    boundaries = Boundaries()
    assert transcribe(f"{server}/v1", boundaries) == SPEECH_TEXT
    assert transcribe(f"{server}/v1", boundaries) == SPEECH_TEXT  # again, with yet another boundary
    assert len(set(boundaries.sent)) == 2 and RECORDED_BOUNDARY not in boundaries.sent


def test_image_edit_replays_whatever_boundary_the_sdk_picks(server: str) -> None:
    boundaries = Boundaries()
    assert edit_image(f"{server}/v1", boundaries) == [base64.b64encode(CAT).decode()]
    assert boundaries.sent and RECORDED_BOUNDARY not in boundaries.sent


def test_another_file_is_a_miss_that_names_the_part(server: str) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        transcribe(f"{server}/v1", audio=SPEECH[:-2] + b"\x01\x00")
    message = raised.value.body["message"]  # type: ignore[index]
    assert "differs in 1 place" in message and "part file: recorded 204 bytes of binary data" in message


def test_a_urlencoded_form_matches_in_any_order_and_spelling(server: str) -> None:
    """Recorded as google-auth sends a token request; sent here by httpx, fields in the other
    order and with other escapes."""
    with httpx.Client(base_url=server) as client:
        answer = client.post("/token", data={"assertion": "eyJhbGciOiJSUzI1NiJ9.e30.c2ln",
                                             "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer"})
        other = client.post("/token", data={"assertion": "another", "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer"})
    assert answer.status_code == 200 and answer.json()["access_token"] == "ya29.recorded"
    assert other.status_code == 404
    assert 'form assertion: recorded "eyJhbGciOiJSUzI1NiJ9.e30.c2ln", received "another"' in other.json()["error"]["message"]
