"""Issue 22 asked for at least sixty bad inputs, each with its own clear message; issue 68 for the new surfaces'
(about 130 in all): count them."""

import test_bad_commands
import test_bad_data
import test_bad_files
import test_bad_recipes
import test_failed_writes
import test_option_values

MODULES = (test_bad_recipes, test_bad_files, test_bad_data, test_failed_writes, test_option_values, test_bad_commands)


def test_there_are_at_least_a_hundred_and_thirty_bad_inputs():
    tables = [value for module in MODULES for name, value in vars(module).items() if name.endswith("_CASES")]
    singles = [name for module in MODULES for name in vars(module) if name.startswith("test_")]
    assert len(tables) == 24  # every table of cases is counted
    assert sum(map(len, tables)) + len(singles) >= 130
