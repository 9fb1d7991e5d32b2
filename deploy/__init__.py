"""Deploying the stack to an AWS account: ``make deploy``, ``make user``, ``make destroy``.

Operator tools, never packaged into a Lambda: ``preflight`` (credentials and bootstrap before
``cdk deploy``), ``outputs`` (the stack outputs ``cdk deploy`` writes), ``users`` (the first
user of the pool) and the command line in ``__main__`` (``python -m deploy --help``).
"""
