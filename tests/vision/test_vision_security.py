"""Auth, rate limits, body limits, CORS and path traversal."""

from __future__ import annotations

import pytest
from vision_support import SMALL, png_pixels

from thau.vision.errors import RateLimited
from thau.vision.security import RateLimiter, check_rate

PAYLOAD = {"prompt": "a red fox", **SMALL, "seed": 1}


def test_without_a_configured_key_no_auth_is_needed(app_with):
    client = app_with()
    assert client.post("/vision/generate", json=PAYLOAD).status_code == 200


def test_bearer_key_guards_everything_but_health(app_with):
    client = app_with(api_key="s3cret-key")
    good = {"Authorization": "Bearer s3cret-key"}
    bad_headers = (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "s3cret-key"},
        {"Authorization": "Basic s3cret-key"},
    )
    for headers in bad_headers:
        response = client.post("/vision/generate", json=PAYLOAD, headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert "Authorization: Bearer" in response.json()["error"]["message"]
        assert client.get("/metrics", headers=headers).status_code == 401
        assert client.get("/vision/stats", headers=headers).status_code == 401
        for path in ("/v1/images/generations", "/sdapi/v1/txt2img"):
            assert client.post(path, json={"prompt": "x"}, headers=headers).status_code == 401
    assert client.get("/health").status_code == 200
    response = client.post("/vision/generate", json=PAYLOAD, headers=good)
    assert response.status_code == 200
    url = response.json()["image_url"]
    assert client.get(url).status_code == 401
    assert png_pixels(client.get(url, headers=good).content).shape == (256, 256, 3)
    assert client.get("/metrics", headers=good).status_code == 200


def test_key_comparison_is_constant_time(monkeypatch, app_with):
    import hmac

    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    client = app_with(api_key="k")
    client.get("/vision/stats", headers={"Authorization": "Bearer nope"})
    assert calls == [(b"nope", b"k")]


def test_rate_limit_answers_429_with_retry_after(app_with):
    client = app_with(rate_limit=2)
    assert client.post("/vision/generate", json=PAYLOAD).status_code == 200
    assert client.post("/vision/generate", json={"prompt": ""}).status_code == 422  # counted
    response = client.post("/vision/generate", json=PAYLOAD)
    assert response.status_code == 429
    assert 1 <= int(response.headers["retry-after"]) <= 60
    assert response.json()["error"]["type"] == "rate_limited"
    assert client.get("/vision/stats").status_code == 200  # reads are not limited
    assert 'thau_vision_rejected_total{reason="rate_limited"} 1.0' in client.get("/metrics").text


def test_rate_limiter_window_slides():
    limiter = RateLimiter(2, window_s=60)
    check_rate(limiter, "a", now=0)
    check_rate(limiter, "a", now=10)
    check_rate(limiter, "b", now=10)  # other clients have their own allowance
    with pytest.raises(RateLimited) as caught:
        check_rate(limiter, "a", now=20)
    assert caught.value.retry_after == 40
    check_rate(limiter, "a", now=60)  # the first hit has left the window
    check_rate(RateLimiter(0), "a")  # 0 switches it off


def test_large_bodies_get_413(app_with):
    client = app_with(max_body_bytes=2048)
    big = {"prompt": "x" * 1500, "negative_prompt": "y" * 1500}
    response = client.post("/vision/generate", json=big)
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "request_too_large"

    def chunks():  # no Content-Length: the body is counted as it arrives
        yield b'{"prompt": "'
        for _ in range(10):
            yield b"z" * 500
        yield b'"}'

    response = client.post(
        "/vision/generate", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert client.post("/vision/generate", json=PAYLOAD).status_code == 200


def test_cors_is_off_unless_configured(app_with):
    origin = {"Origin": "http://example.test"}
    preflight_headers = {**origin, "Access-Control-Request-Method": "POST"}
    client = app_with()
    assert "access-control-allow-origin" not in client.get("/health", headers=origin).headers
    preflight = client.options("/vision/generate", headers=preflight_headers)
    assert "access-control-allow-origin" not in preflight.headers

    client = app_with(cors_origins="http://example.test, http://other.test")
    response = client.get("/health", headers=origin)
    assert response.headers["access-control-allow-origin"] == "http://example.test"
    assert client.options("/vision/generate", headers=preflight_headers).status_code == 200
    evil = client.get("/health", headers={"Origin": "http://evil.test"})
    assert "access-control-allow-origin" not in evil.headers


TRAVERSALS = [
    "../secret.png",
    "..%2Fsecret.png",
    "%2e%2e%2fsecret.png",
    "%2e%2e/secret.png",
    "..%5Csecret.png",
    "....//secret.png",
    "%2Fetc%2Fpasswd",
    "..",
    ".secret.png",
    "secret.png%00.png",
    "images%2F..%2F..%2Fsecret.png",
    "secret.json",
]


@pytest.mark.parametrize("name", TRAVERSALS)
def test_image_route_never_leaves_the_images_folder(app_with, tmp_path, name):
    client = app_with()
    (tmp_path / "secret.png").write_bytes(b"top secret")
    (tmp_path / "images").mkdir(exist_ok=True)
    (tmp_path / "images" / "secret.json").write_text("{}")
    response = client.get(f"/vision/image/{name}")
    assert response.status_code == 404
    assert b"top secret" not in response.content


def test_unknown_image_is_404(app_with):
    response = app_with().get("/vision/image/20240101_000000_nothing.png")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found"
