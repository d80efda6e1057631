"""README's two commands stay true: CI runs README's test command, and the main job's flags exist."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def readme_commands() -> list[str]:
    return re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text())


def test_readme_has_exactly_two_commands_and_ci_runs_the_test_one():
    commands = readme_commands()
    assert len(commands) == 2
    main_job, tests = commands
    assert "keras_vae train --dataset=mnist" in main_job and "keras_vae export" in main_job
    assert "pytest" in tests
    assert tests in (ROOT / ".ci" / "run").read_text()


def defined_flags(command: str) -> set[str]:
    """Flag names a command's --help lists (in a subprocess: importing two commands would clash in absl)."""
    result = subprocess.run([sys.executable, "-m", "keras_vae", command, "--help"], capture_output=True, text=True,
                            cwd=ROOT, timeout=60, check=True)
    return set(re.findall(r"^  --(?:\[no\])?(\w+)", result.stdout, flags=re.MULTILINE))


def test_main_job_flags_are_defined():
    main_job = readme_commands()[0]
    for command in ("train", "export"):
        part = main_job.split(f"keras_vae {command}", 1)[1].split("&&")[0]
        used = set(re.findall(r"--(\w+)", part))
        assert used and used <= defined_flags(command), (command, used - defined_flags(command))
