"""Form bodies: multipart parts without their boundary, urlencoded fields sorted; malformed
bodies are no forms (compared as bytes), and nothing a client sends makes the reader fail."""

from __future__ import annotations

import random

import pytest

from server.matching.forms import MULTIPART, URLENCODED, Form, Part, diff_forms, read_form

AUDIO = bytes(range(256)) * 4  # a "file" with every byte value, CR and LF and "--" included


def multipart(boundary: str, *parts: tuple[str, str | None, str | None, bytes], preamble: bytes = b"",
              epilogue: bytes = b"") -> bytes:
    """A multipart/form-data body as httpx writes one."""
    out = [preamble]
    for name, filename, content_type, data in parts:
        disposition = f'Content-Disposition: form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        head = disposition + (f"\r\nContent-Type: {content_type}" if content_type else "")
        out.append(f"--{boundary}\r\n{head}\r\n\r\n".encode() + data + b"\r\n")
    out.append(f"--{boundary}--\r\n".encode() + epilogue)
    return b"".join(out)


TRANSCRIPTION = (("model", None, None, b"whisper-1"), ("file", "speech.wav", "audio/wav", AUDIO))


def content_type(boundary: str) -> str:
    return f"multipart/form-data; boundary={boundary}"


def test_multipart_parts_are_read_whatever_the_boundary() -> None:
    first = read_form(multipart("2e07e0aaa61272dfa24495b25e55f2fd", *TRANSCRIPTION), content_type("2e07e0aaa61272dfa24495b25e55f2fd"))
    second = read_form(multipart("----WebKitFormBoundary7MA4YWxk", *TRANSCRIPTION), 'Multipart/Form-Data; Boundary="----WebKitFormBoundary7MA4YWxk"')
    assert first == second == Form(MULTIPART, parts=(
        Part("model", None, None, b"whisper-1"), Part("file", "speech.wav", "audio/wav", AUDIO)))
    assert hash(first) == hash(second)


@pytest.mark.parametrize(
    "changed",
    [
        (("model", None, None, b"whisper-2"), TRANSCRIPTION[1]),  # a field's value
        (TRANSCRIPTION[0], ("file", "other.wav", "audio/wav", AUDIO)),  # the filename
        (TRANSCRIPTION[0], ("file", "speech.wav", "audio/x-wav", AUDIO)),  # the part's content type
        (TRANSCRIPTION[0], ("file", "speech.wav", "audio/wav", AUDIO[:-1])),  # the file's bytes
        (TRANSCRIPTION[1], TRANSCRIPTION[0]),  # the order of the parts
        (TRANSCRIPTION[0],),  # a part missing
    ],
)
def test_multipart_forms_that_differ(changed: tuple) -> None:
    assert read_form(multipart("a", *TRANSCRIPTION), content_type("a")) != read_form(multipart("b", *changed), content_type("b"))


def test_preamble_epilogue_and_padding_after_a_delimiter_are_ignored() -> None:
    plain = read_form(multipart("b", *TRANSCRIPTION), content_type("b"))
    padded = multipart("b", *TRANSCRIPTION, preamble=b"This is a MIME message.\r\n", epilogue=b"bye").replace(b"--b\r\n", b"--b \t\r\n")
    assert read_form(padded, content_type("b")) == plain


def test_a_multipart_body_recorded_without_its_content_type_is_recognised_by_its_first_line() -> None:
    body = multipart("recorded", *TRANSCRIPTION)
    assert read_form(body, None) == read_form(multipart("sent", *TRANSCRIPTION), content_type("sent"))
    assert read_form(body, "application/octet-stream") is None  # said to be something else: bytes


@pytest.mark.parametrize(
    "body, header",
    [
        (multipart("b", *TRANSCRIPTION), content_type("other")),  # the boundary is not in the body
        (multipart("b", *TRANSCRIPTION)[:-8], content_type("b")),  # no closing delimiter
        (multipart("b", *TRANSCRIPTION).replace(b"\r\n", b"\n"), content_type("b")),  # LF line ends
        (multipart("b", *TRANSCRIPTION).replace(b"Content-Disposition", b"X-Disposition"), content_type("b")),
        (multipart("b", *TRANSCRIPTION).replace(b'form-data; name="model"', b"form-data"), content_type("b")),  # no name
        (multipart("b", *TRANSCRIPTION).replace(b"form-data;", b"attachment;"), content_type("b")),
        (multipart("b", *TRANSCRIPTION).replace(b"Content-Type: audio/wav", b"no colon here"), content_type("b")),
        (multipart("b", *TRANSCRIPTION), "multipart/form-data"),  # no boundary parameter
        (multipart("b" * 71, *TRANSCRIPTION), content_type("b" * 71)),  # longer than RFC 2046 allows
        (b"--b\r\n\r\nno headers\r\n--b--\r\n", content_type("b")),
        (b"--b--\r\n", "text/plain"),
        (b"", content_type("b")),
        (b"", URLENCODED),  # an empty body is compared as bytes, whatever it is labelled
        (b"hello", None),
        (b"--" + b"x" * 100 + b"\r\n--" + b"x" * 100 + b"--\r\n", None),  # a first line too long for a boundary
    ],
)
def test_malformed_or_other_bodies_are_not_forms(body: bytes, header: str | None) -> None:
    assert read_form(body, header) is None


def test_an_empty_multipart_form_is_a_form() -> None:
    assert read_form(b"--b--\r\n", content_type("b")) == Form(MULTIPART)


def test_quoted_parameters_may_hold_semicolons_and_star_filenames_are_kept() -> None:
    body = (b'--b\r\nContent-Disposition: form-data; name="a;b"; filename*=UTF-8\'\'%E2%82%AC.txt\r\n'
            b"Content-Type: text/plain\r\n\r\nx\r\n--b--\r\n")
    assert read_form(body, content_type("b")) == Form(MULTIPART, parts=(Part("a;b", "UTF-8''%E2%82%AC.txt", "text/plain", b"x"),))


def test_no_input_makes_the_multipart_reader_fail() -> None:
    body = multipart("boundary", *TRANSCRIPTION)
    generator = random.Random(12)
    for _ in range(3000):
        mutated = bytearray(body)
        for _ in range(generator.randint(1, 6)):
            position = generator.randrange(len(mutated))
            choice = generator.random()
            if choice < 0.4:
                mutated[position] = generator.choice(b"-\r\n:;\"= ab")
            elif choice < 0.7:
                del mutated[position : position + generator.randint(1, 40)]
            else:
                mutated[position:position] = generator.choice([b"\r\n", b"--boundary", b"--", b'"', b";"])
        form = read_form(bytes(mutated), content_type("boundary"))
        assert form is None or form.kind == MULTIPART


def test_urlencoded_fields_are_sorted_and_decoded() -> None:
    recorded = read_form(b"grant_type=urn%3aietf%3aparams&assertion=a.b+c&empty=&flag", URLENCODED)
    sent = read_form(b"flag&assertion=a.b%20c&empty=&grant_type=urn%3Aietf%3Aparams", "application/x-www-form-urlencoded; charset=utf-8")
    assert recorded == sent == Form(URLENCODED, pairs=((b"assertion", b"a.b c"), (b"empty", b""), (b"flag", b""),
                                                       (b"grant_type", b"urn:ietf:params")))
    assert read_form(b"a=1&a=2", URLENCODED) != read_form(b"a=2", URLENCODED)
    assert read_form(b"q=%E9t%C3%A9", URLENCODED) == Form(URLENCODED, pairs=((b"q", b"\xe9t\xc3\xa9"),))  # any encoding


def test_differences_name_the_part_or_field() -> None:
    recorded = read_form(multipart("a", *TRANSCRIPTION, ("language", None, None, b"pt")), content_type("a"))
    received = read_form(multipart("b", ("model", None, None, b"whisper-2"), ("file", "s.wav", "audio/wav", AUDIO[-9:])), content_type("b"))
    assert recorded is not None and received is not None
    assert diff_forms(recorded, received) == [
        ("part model", "whisper-1", "whisper-2"),
        ("part file filename", "speech.wav", "s.wav"),
        ("part file", AUDIO, AUDIO[-9:]),
        ("part language", "pt", None),
    ]
    swapped = read_form(multipart("c", TRANSCRIPTION[1], TRANSCRIPTION[0]), content_type("c"))
    assert swapped is not None and diff_forms(recorded, swapped)[:2] == [("part 1 name", "model", "file"), ("part 2 name", "file", "model")]
    a, b = read_form(b"model=x&n=1&n=2", URLENCODED), read_form(b"model=y&n=1&extra=%FF", URLENCODED)
    assert a is not None and b is not None
    assert diff_forms(a, b) == [("form model", "x", "y"), ("form n", "1, 2", "1"), ("form extra", None, "\ufffd")]
