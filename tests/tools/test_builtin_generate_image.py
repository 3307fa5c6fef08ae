"""generate_image against a local server that speaks the vision API."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from thau.errors import ToolArgumentsInvalid, ToolError
from thau.tools import generate_image
from thau.tools.registry import ToolContext, ToolRegistry


def error(status: int, message: str, kind: str) -> tuple:
    """thau.vision's one error shape."""
    body = {"success": False, "error": {"message": message, "type": kind}, "detail": message}
    return status, body


def vision_app(state: dict[str, Any]) -> Callable[[Any], tuple]:
    """Mimics thau.vision: POST /vision/generate, GET /vision/image/{name}."""

    def app(request: Any) -> tuple:
        name = state.get("name", "img_0001.png")
        if state.get("key") and request.headers.get("authorization") != f"Bearer {state['key']}":
            return 401, {"detail": "a valid API key is required"}
        if request.method == "GET":
            state["downloads"].append(request.path)
            if request.path == f"/vision/image/{state.get('served', name)}":
                return 200, state["png"], {"Content-Type": "image/png"}
            return 404, {"detail": "Image not found"}
        if request.path != "/vision/generate":
            return 404, {"detail": "Not Found"}
        state["requests"].append(request.json())
        mode = state.get("mode", "ok")
        if mode == "loading":
            return error(503, "The model is still loading.", "model_not_ready")
        if mode == "invalid":
            return 422, {
                "success": False,
                "error": {"message": "width: Input should be a multiple of 8 (got 500)"},
                "detail": [{"loc": ["body", "width"], "msg": "Input should be a multiple of 8"}],
            }
        if mode == "failed":
            return 200, {"success": False, "error": "CUDA out of memory"}
        if mode == "slow":
            time.sleep(1.5)
        if mode == "garbage":
            return 200, b"<html>proxy error</html>", {"Content-Type": "text/html"}
        answer = {
            "success": True,
            "image_url": f"/vision/image/{name}",
            "seed": 1234,
            "metadata": {"model": "tiny-sd", "num_inference_steps": 1, "width": 512, "height": 512},
        }
        return 200, answer

    return app


@pytest.fixture
def vision(serve: Callable[..., str], make_png: Callable[..., bytes]) -> tuple[str, dict[str, Any]]:
    state: dict[str, Any] = {
        "requests": [],
        "downloads": [],
        "png": make_png(8, 8, lambda x, y: (x * 30, y * 30, 200)),
    }
    return serve(vision_app(state)), state


@pytest.fixture
def registry() -> ToolRegistry:
    return ToolRegistry([generate_image.tool])


def run(url: str, data_dir: Path, **arguments: Any) -> dict[str, Any]:
    args = generate_image.GenerateImageArgs(**arguments)
    return generate_image.generate(args, ToolContext(data_dir=data_dir, vision_url=url))


def test_generates_downloads_and_returns_url_and_path(
    vision: tuple[str, dict[str, Any]], registry: ToolRegistry, tmp_path: Path
) -> None:
    url, state = vision
    arguments = {"prompt": "a red fox in the snow", "num_inference_steps": 12, "seed": 7}
    tool, args = registry.validate("generate_image", arguments)
    outcome = registry.execute(tool, args, ToolContext(data_dir=tmp_path, vision_url=url + "/"))
    assert outcome.ok, outcome.error
    result = outcome.result
    assert result["image_url"] == f"{url}/vision/image/img_0001.png"
    assert result["path"] == str(tmp_path / "images" / "img_0001.png")
    assert Path(result["path"]).read_bytes() == state["png"]
    assert result["seed"] == 1234
    assert result["metadata"]["model"] == "tiny-sd"
    assert (result["width"], result["height"]) == (512, 512)  # what the server made
    sent = state["requests"][0]
    assert sent == {"prompt": "a red fox in the snow", "num_inference_steps": 12, "seed": 7}
    assert state["downloads"] == ["/vision/image/img_0001.png"]
    assert list((tmp_path / "images").iterdir()) == [Path(result["path"])]


def test_an_image_already_in_the_data_dir_is_not_downloaded_again(
    vision: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    url, state = vision
    local = tmp_path / "images" / "img_0001.png"
    local.parent.mkdir(parents=True)
    local.write_bytes(b"written by a server on this machine")
    result = run(url, tmp_path, prompt="a lighthouse")
    assert result["path"] == str(local)
    assert state["downloads"] == []
    assert local.read_bytes() == b"written by a server on this machine"


def test_server_down_says_how_to_start_it(closed_port: int, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port}"
    with pytest.raises(ToolError) as caught:
        run(url, tmp_path, prompt="a cat")
    assert url in str(caught.value)
    assert "thau-vision serve" in str(caught.value)


def test_server_not_ready_says_how_to_start_it(
    vision: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    url, state = vision
    state["mode"] = "loading"
    with pytest.raises(ToolError) as caught:
        run(url, tmp_path, prompt="a cat")
    message = str(caught.value)
    assert "not ready" in message and "still loading" in message
    assert "thau-vision serve" in message


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("failed", "CUDA out of memory"),
        ("garbage", "not JSON"),
        ("invalid", r"HTTP 422: width: Input should be a multiple of 8 \(got 500\)"),
    ],
)
def test_server_failures_are_reported(
    vision: tuple[str, dict[str, Any]], tmp_path: Path, mode: str, expected: str
) -> None:
    url, state = vision
    state["mode"] = mode
    with pytest.raises(ToolError, match=expected):
        run(url, tmp_path, prompt="a cat")
    assert not (tmp_path / "images").exists()


def test_the_api_key_is_sent_when_set(
    vision: tuple[str, dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, state = vision
    state["key"] = "s3cret"
    with pytest.raises(ToolError, match="THAU_VISION_API_KEY"):
        run(url, tmp_path, prompt="a cat")
    monkeypatch.setenv("THAU_VISION_API_KEY", "s3cret")
    assert Path(run(url, tmp_path, prompt="a cat")["path"]).read_bytes() == state["png"]


def test_a_generation_slower_than_the_timeout(
    vision: tuple[str, dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, state = vision
    state["mode"] = "slow"
    monkeypatch.setenv("THAU_VISION_TIMEOUT", "0.3")
    with pytest.raises(ToolError, match=r"did not answer in time \(limit 0\.3 s"):
        run(url, tmp_path, prompt="a cat")
    monkeypatch.setenv("THAU_VISION_TIMEOUT", "soon")
    with pytest.raises(ToolError, match="THAU_VISION_TIMEOUT"):
        run(url, tmp_path, prompt="a cat")


def test_an_image_name_that_climbs_out_is_refused(
    vision: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    url, state = vision
    state["name"] = "..%2F..%2Fescaped.png"
    with pytest.raises(ToolError, match="unsafe name"):
        run(url, tmp_path / "data", prompt="a cat")
    assert list(tmp_path.rglob("escaped.png")) == []


def test_a_missing_image_leaves_nothing_behind(
    vision: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    url, state = vision
    state["served"] = "another.png"  # announced, then 404 when fetched
    with pytest.raises(ToolError, match="HTTP 404: Image not found"):
        run(url, tmp_path, prompt="a cat")
    assert list((tmp_path / "images").iterdir()) == []


def test_only_what_was_asked_is_sent_so_the_servers_defaults_apply(
    vision: tuple[str, dict[str, Any]], registry: ToolRegistry, tmp_path: Path
) -> None:
    url, state = vision
    for arguments in (
        {"prompt": "a lighthouse"},
        {"prompt": "a lighthouse", "negative_prompt": ""},
        {"prompt": "a lighthouse", "width": None, "seed": None},
    ):
        _, args = registry.validate("generate_image", arguments)
        generate_image.generate(args, ToolContext(data_dir=tmp_path, vision_url=url))
        assert state["requests"][-1] == {"prompt": "a lighthouse"}
    asked = {"prompt": "a lighthouse", "width": 768, "height": 512, "seed": 42}
    _, args = registry.validate("generate_image", asked)
    generate_image.generate(args, ToolContext(data_dir=tmp_path, vision_url=url))
    assert state["requests"][-1] == asked


@pytest.mark.parametrize(
    "arguments",
    [
        {"prompt": "x", "num_inference_steps": 1, "guidance_scale": 0},  # a distilled model's
        {"prompt": "x", "num_inference_steps": 4, "guidance_scale": 1.5},
        {"prompt": "x", "num_inference_steps": 50, "guidance_scale": 7.5},  # a standard one's
        {"prompt": "x", "negative_prompt": "text, watermark", "width": 1024, "height": 1024},
    ],
)
def test_the_ranges_cover_distilled_and_standard_models(
    registry: ToolRegistry, arguments: dict[str, Any]
) -> None:
    registry.validate("generate_image", arguments)


@pytest.mark.parametrize(
    "arguments",
    [
        {},
        {"prompt": ""},
        {"prompt": "x", "num_inference_steps": 0},
        {"prompt": "x", "num_inference_steps": 101},
        {"prompt": "x", "guidance_scale": -0.5},
        {"prompt": "x", "guidance_scale": 21},
        {"prompt": "x", "width": 128},
        {"prompt": "x", "width": 500},
        {"prompt": "x", "height": 2048},
        {"prompt": "x", "seed": -1},
    ],
)
def test_arguments_outside_the_design_ranges_are_refused(
    registry: ToolRegistry, arguments: dict[str, Any]
) -> None:
    with pytest.raises(ToolArgumentsInvalid):
        registry.validate("generate_image", arguments)


def test_schema_documents_the_ranges() -> None:
    schema = generate_image.tool.native_schema()["function"]["parameters"]
    props = schema["properties"]
    assert schema["required"] == ["prompt"]
    steps, guidance = props["num_inference_steps"], props["guidance_scale"]
    assert (steps["minimum"], steps["maximum"]) == (1, 100)
    assert (guidance["minimum"], guidance["maximum"]) == (0, 20)
    assert (props["width"]["minimum"], props["height"]["maximum"]) == (256, 1024)
    assert "default" in steps["description"]  # the model is told to leave it out
    assert not generate_image.tool.needs_approval
