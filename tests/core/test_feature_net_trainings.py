"""The feature_net_trainings table: the migration makes what core.db declares, and reverts."""

from alembic import command
from alembic.config import Config
from sqlalchemy import inspect

from core.db import FeatureNetTraining, engine_for
from core.settings import Settings
from tests.conftest import ROOT


def test_the_feature_net_trainings_migration_applies_and_reverts(db_settings: Settings) -> None:
    def columns() -> dict[str, bool] | None:
        found = inspect(engine_for(db_settings.database_url))
        if not found.has_table("feature_net_trainings"):
            return None
        return {c["name"]: c["nullable"] for c in found.get_columns("feature_net_trainings")}

    declared = {c.name: c.nullable for c in FeatureNetTraining.__table__.columns}
    assert columns() == declared
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["database_url"] = db_settings.database_url
    config.attributes["configure_logger"] = False
    command.downgrade(config, "0011")
    engine_for(db_settings.database_url).dispose()
    assert columns() is None
    command.upgrade(config, "head")
    engine_for(db_settings.database_url).dispose()
    assert columns() == declared
