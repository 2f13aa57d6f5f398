"""The core's conformance suite against a real PostgreSQL server, each test in a fresh schema."""

from __future__ import annotations

import tempfile
from typing import Any

import pytest
import storage_shim as ss
from hypothesis.stateful import RuleBasedStateMachine, run_state_machine_as_test
from storage_shim.testing import BackendContract
from storage_shim.testing.contract import StoreModel

from storage_shim_postgres.testing import Schema, drop_schema, new_schema_name


class TestPostgresContract(BackendContract):
    backend = "postgres"

    @pytest.fixture
    def location(self, postgres_uri: Schema) -> str:
        return postgres_uri.uri

    @pytest.fixture
    def store_options(self, postgres_uri: Schema) -> dict[str, Any]:
        return {"schema": postgres_uri.schema, "lock_timeout": 60}

    def test_behaves_like_a_dict(  # type: ignore[override]  # it needs the location too
        self, store_options: dict[str, Any], location: str
    ) -> None:
        """The contract's model, each run in a schema of its own (the base opens a directory)."""
        options = {k: v for k, v in store_options.items() if k != "schema"}

        class PostgresModel(StoreModel):
            def __init__(self) -> None:
                RuleBasedStateMachine.__init__(self)
                self.directory = tempfile.mkdtemp(prefix="storage-shim-model-")
                self.schema = new_schema_name()
                self.store = ss.open_store(location, schema=self.schema, **options)
                self.model = {}

            def teardown(self) -> None:
                try:
                    super().teardown()
                finally:
                    drop_schema(location, self.schema)

        run_state_machine_as_test(PostgresModel, settings=self.state_machine_settings)
