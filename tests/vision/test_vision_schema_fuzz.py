"""Schemathesis over the OpenAPI schema: whatever it sends, never a 5xx."""

from __future__ import annotations

import re

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode
from vision_support import make_settings

from thau.vision import create_app

EXAMPLES = 8
CONFIG = SchemathesisConfig.from_dict({"generation": {"max-examples": EXAMPLES}})

# Generation is the slow part: valid-but-large values and missing fields (whose defaults are
# 512 px and 30 steps) are made small. Invalid values are sent as generated.
VALID_SIZE = re.compile(r"\d{3,4}x\d{3,4}")
SMALL_SIDE = 256
SIDE_FIELDS = ("width", "height")
STEP_FIELDS = ("num_inference_steps", "steps")
COUNT_FIELDS = ("n", "batch_size", "n_iter")
CHEAP_DEFAULTS = {
    "/vision/generate": {"num_inference_steps": 10, "width": 256, "height": 256},
    "/v1/images/generations": {"num_inference_steps": 10, "size": "256x256"},
    "/sdapi/v1/txt2img": {"steps": 10, "width": 256, "height": 256},
}


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def shrink(path: str, body: dict) -> dict:
    """Keep invalid values as generated; make valid-but-slow ones (and defaults) cheap."""
    body = {**CHEAP_DEFAULTS.get(path, {}), **body}
    for field in SIDE_FIELDS:
        if _number(body.get(field)) and 256 < body[field] <= 1024:
            body[field] = SMALL_SIDE
    for field in STEP_FIELDS:
        if _number(body.get(field)) and 10 < body[field] <= 100:
            body[field] = 10
    for field in COUNT_FIELDS:
        if _number(body.get(field)) and 1 < body[field] <= 16:
            body[field] = 1
    if isinstance(body.get("size"), str) and VALID_SIZE.fullmatch(body["size"]):
        body["size"] = f"{SMALL_SIDE}x{SMALL_SIDE}"
    return body


def fuzz_operation(operation, mode: GenerationMode, statuses: list[int]) -> None:
    """Send up to EXAMPLES generated requests to one operation; fail on any 5xx."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def check(case):
        if isinstance(case.body, dict):
            case.body = shrink(operation.path, case.body)
        response = case.call()
        statuses.append(response.status_code)
        case.validate_response(response, checks=[not_a_server_error])

    try:
        check()
    except Unsatisfiable:  # no invalid input exists for an operation without inputs
        assert mode is GenerationMode.NEGATIVE and not operation.body


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_errors(tmp_path, tiny_pipeline, mode):
    app = create_app(make_settings(tmp_path, queue_size=100), tiny_pipeline)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=CONFIG)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 9
    statuses: list[int] = []
    for operation in operations:
        fuzz_operation(operation, mode, statuses)
    assert len(statuses) >= len(operations)
    assert all(status < 500 for status in statuses)
    assert (200 if mode is GenerationMode.POSITIVE else 422) in statuses
