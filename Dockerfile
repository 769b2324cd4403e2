FROM python:3.11-slim
WORKDIR /app
# git: each project's repository, run branches and step worktrees. bubblewrap: the sandbox
# agents' commands run in (agents/sandbox.py); util-linux brings prlimit for its limits.
RUN apt-get update && apt-get install -y --no-install-recommends git bubblewrap util-linux \
    && rm -rf /var/lib/apt/lists/*
COPY . /app
# Editable install: templates/ and static/ stay beside the code, where settings look for them.
RUN pip install --no-cache-dir -e . \
    && useradd --create-home orchestra \
    && mkdir -p /data && chown orchestra /data
USER orchestra
ENV ORCHESTRA_DATA_DIR=/data
EXPOSE 8000
CMD ["orchestra", "web", "--host", "0.0.0.0", "--port", "8000"]
