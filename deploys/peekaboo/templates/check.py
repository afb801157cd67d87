"""Validate a Peekaboo configuration and its ruleset the way the daemon does at start."""
import sys

from peekaboo.config import PeekabooAnalyzerConfig, PeekabooConfig, PeekabooConfigParser
from peekaboo.ruleset.engine import RulesetEngine

config = PeekabooConfig(config_file=sys.argv[1])
RulesetEngine(PeekabooConfigParser(config.ruleset_config), None, None,
              PeekabooAnalyzerConfig(config.analyzer_config)).start()
