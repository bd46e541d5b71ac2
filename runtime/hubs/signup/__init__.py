"""Self-service signup: a municipality applies at ``/signup``, platform ops decide at ``/ops``."""

from urbanstack.runtime.hubs.signup.app import SignupLimits, create_signup_app

__all__ = ["SignupLimits", "create_signup_app"]
