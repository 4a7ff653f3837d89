"""Typed run configuration: the schema (``schema``), cross-field checks (``validate``), YAML + overrides
(``loader``) and the field helpers every posttrain config uses (``fields``)."""

from .fields import build_dataclass, coerce, did_you_mean, help_field
from .loader import (all_keys, describe, load_config, parse_overrides, parse_yaml, read_yaml_file, set_dotted,
                     to_dict, write_config)
from .schema import (AdapterConfig, DataConfig, DePTSettings, LoraSettings, LossConfig, ModelConfig, RunConfig,
                     SoftPromptSettings, TaskConfig, TrainConfig)
from .validate import validate

__all__ = ["AdapterConfig", "DataConfig", "DePTSettings", "LoraSettings", "LossConfig", "ModelConfig", "RunConfig",
           "SoftPromptSettings", "TaskConfig", "TrainConfig", "all_keys", "build_dataclass", "coerce", "describe",
           "did_you_mean", "help_field", "load_config", "parse_overrides", "parse_yaml", "read_yaml_file", "set_dotted", "to_dict",
           "validate", "write_config"]
