"""The contract: the OpenAPI document that drives routing and validation."""

from pathlib import Path

SPEC_PATH = Path(__file__).with_name("support-requests.yaml")
