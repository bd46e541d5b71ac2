"""The hubs people use in the browser: the Gov Hub for municipal staff (``gov``); the Citizen Hub
and signup follow. They stand on :mod:`urbanstack.runtime.web`."""
