#!/usr/bin/env python3
"""CDK entry point: `cdk synth` / `cdk deploy TrnClusterStack` run this."""

import sys

from aws_cdk import App

from stacks.app import add_stacks
from trn_constructs.config import ConfigError


def main() -> int:
    app = App()
    try:
        add_stacks(app)
    except ConfigError as error:
        # A user's mistakes: one line each naming the setting, not a traceback.
        print(error.report(), file=sys.stderr)
        return 1
    app.synth()
    return 0


if __name__ == "__main__":
    sys.exit(main())
