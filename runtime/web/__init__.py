"""The web foundation every page of the platform stands on (Gov Hub, Citizen Hub, signup, tool pages):
server-rendered Jinja2 templates with German and English catalogues, the front-end bundle built by
esbuild (``frontend/`` → ``static/dist``), sessions and CSRF protection, and sign-in with Keycloak.
See docs/web.md."""
