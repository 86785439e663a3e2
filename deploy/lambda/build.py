"""Build the code both Lambda functions run into deploy/lambda/build/ (the template's
``CodeUri``): shardflow's packages and the wheels of deploy/lambda/requirements.txt for
the Lambda runtime, with no Makefile, Docker or ``sam build``:

    python deploy/lambda/build.py                    # python3.12, x86_64
    python deploy/lambda/build.py --arch arm64       # set Architectures: [arm64] as well
    sam deploy --template-file deploy/lambda/template.yaml --guided

pip downloads binary wheels for the target platform (``--only-binary``), so it builds the
same on macOS, Windows or Linux.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PACKAGES = ("schemas", "processors", "streams", "shardflow")
PLATFORMS = {"x86_64": "manylinux2014_x86_64", "arm64": "manylinux2014_aarch64"}


def copy_packages(target: Path) -> int:
    """Copy the packages' modules (and py.typed markers); returns how many files."""
    count = 0
    for package in PACKAGES:
        for source in sorted((ROOT / package).rglob("*")):
            if source.suffix not in (".py", ".typed") or "__pycache__" in source.parts:
                continue
            destination = target / source.relative_to(ROOT)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)
            count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=sorted(PLATFORMS), default="x86_64")
    parser.add_argument("--python", default="3.12", help="the functions' runtime version")
    parser.add_argument("--out", type=Path, default=HERE / "build")
    args = parser.parse_args(argv)
    out: Path = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    files = copy_packages(out)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--target",
            str(out),
            "--platform",
            PLATFORMS[args.arch],
            "--implementation",
            "cp",
            "--python-version",
            args.python,
            "--only-binary=:all:",
            "--requirement",
            str(HERE / "requirements.txt"),
        ],
        check=True,
    )
    print(f"built {out}: {files} shardflow files, requirements for {args.arch} {args.python}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
