"""The command-line options every paid-API command shares."""

import click


def call_options(default_model: str, base_url: bool = True):
    """The options every paid-API command shares (model, endpoint, limits, budget, retries)."""

    def decorate(f):
        options = [
            click.option("--model", default=default_model, show_default=True,
                         help="Model id (models retire: the server's resolved model is recorded too)."),
            click.option("--concurrency", default=8, show_default=True, type=click.IntRange(1, 1024),
                         help="Requests in flight at once."),
            click.option("--rpm", type=click.FloatRange(min=0, min_open=True), help="At most this many requests per minute."),
            click.option("--tpm", type=click.FloatRange(min=0, min_open=True),
                         help="At most this many (estimated) tokens per minute."),
            click.option("--max-cost", type=click.FloatRange(min=0), help="Stop before this run's cost in USD would "
                         "pass this (estimated from prompt tokens plus max output tokens)."),
            click.option("--dry-run", is_flag=True, help="Count requests, those already paid for, and the "
                         "estimated cost; send nothing."),
            click.option("--retry-failed", is_flag=True, help="Send again requests that failed permanently before."),
            click.option("--prices", type=click.Path(exists=True, dir_okay=False),
                         help="A price table (TOML) whose entries override schema/prices.toml "
                              "(also $PROMPTMILL_PRICES)."),
            click.option("--timeout", default=120.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
                         help="Seconds to wait for one response."),
            click.option("--max-attempts", default=6, show_default=True, type=click.IntRange(1),
                         help="Attempts per request (transient errors, unparseable answers)."),
            click.option("--parse-tries", default=3, show_default=True, type=click.IntRange(1),
                         help="Attempts before an answer that can't be parsed counts as failed."),
            click.option("--backoff-base", default=1.0, show_default=True, type=click.FloatRange(min=0),
                         help="First retry delay in seconds (doubles, jittered)."),
            click.option("--backoff-cap", default=60.0, show_default=True, type=click.FloatRange(min=0),
                         help="Longest retry delay in seconds, Retry-After included."),
        ]
        if base_url:
            options.append(click.option(
                "--base-url", envvar="OPENAI_BASE_URL",
                help="An OpenAI-compatible server (vLLM, Ollama: http://localhost:11434/v1) instead of "
                     "api.openai.com (also $OPENAI_BASE_URL, as the OpenAI SDK reads it)."))
        for option in reversed(options):
            f = option(f)
        return f

    return decorate
