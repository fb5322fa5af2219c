# vivit-hpo: one image for GPU workers, the coordinator and optuna-dashboard.
#   docker build -t vivit-hpo .
#   docker run --gpus all -e VIVIT_HPO_STORAGE=postgresql://... vivit-hpo worker NAME --device cuda:any
# The PyTorch runtime image brings CUDA, cuDNN and a matching torch; pip adds the rest.
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VIVIT_HPO_HOME=/work \
    VIVIT_HPO_GPU_LOCK_DIR=/locks

WORKDIR /opt/vivit-hpo
# Dependencies first (a layer that survives code edits), then the package itself.
COPY pyproject.toml README.md ./
# (torch comes with the base image; the other dependencies are read from pyproject.toml.)
RUN python -c "import tomllib; d = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print('\n'.join(x for x in d if not x.startswith('torch')))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt
COPY vivit_hpo ./vivit_hpo
COPY configs ./configs
COPY studies ./studies
RUN pip install --no-deps . && mkdir -p /work /locks

WORKDIR /work
ENTRYPOINT ["vivit-hpo"]
CMD ["--help"]
