"""What of an exchange reaches the disk: an allow-list of request headers, no cookie, no
account, no key in the query."""

from __future__ import annotations

import pytest

from server.record.scrub import Scrubber, keepable_header, redact_query

CLIENT_HEADERS = [("content-type", "application/json"), ("authorization", "Bearer sk-1"), ("x-api-key", "sk-2"),
                  ("anthropic-version", "2023-06-01"), ("cookie", "a=b"), ("x-stainless-os", "Linux"),
                  ("user-agent", "OpenAI/Python"), ("x-goog-api-key", "AIza"), ("x-amz-security-token", "t")]


def test_request_headers_are_kept_by_an_allow_list() -> None:
    assert Scrubber().request_headers(CLIENT_HEADERS) == (
        ("content-type", "application/json"), ("anthropic-version", "2023-06-01"), ("user-agent", "OpenAI/Python"))


def test_keep_header_widens_the_list_but_never_to_a_credential() -> None:
    assert ("x-stainless-os", "Linux") in Scrubber(["X-Stainless-OS"]).request_headers(CLIENT_HEADERS)
    for name in ("Authorization", "x-api-key", "api-key", "x-goog-api-key", "Cookie", "x-amz-security-token"):
        with pytest.raises(ValueError, match="never recorded"):
            keepable_header(name)


def test_response_cookies_are_dropped_and_accounts_redacted() -> None:
    headers = [("content-type", "application/json"), ("set-cookie", "s=1"), ("openai-organization", "org-1"),
               ("openai-project", "proj_1"), ("anthropic-organization-id", "a-1"), ("x-request-id", "req_1")]
    assert Scrubber().response_headers(headers) == (
        ("content-type", "application/json"), ("openai-organization", "REDACTED"), ("openai-project", "REDACTED"),
        ("anthropic-organization-id", "REDACTED"), ("x-request-id", "req_1"))


def test_credential_query_parameters_are_redacted_and_the_rest_kept_as_sent() -> None:
    assert redact_query("alt=sse&key=AIza123&x=%20a+b&API_KEY=1&token=t&empty=&flag") == (
        "alt=sse&key=REDACTED&x=%20a+b&API_KEY=REDACTED&token=REDACTED&empty=&flag")
    assert redact_query("") == "" and redact_query("keys=1") == "keys=1"

