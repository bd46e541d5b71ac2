"""Entry point for `pulumi up` in this folder (see docs/deploy.md)."""

import pulumi

from urbanstack.stacks.platform import config, program

for name, value in program.deploy(config.load()).items():
    pulumi.export(name, value)
