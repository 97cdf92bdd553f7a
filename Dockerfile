# One image for every process of the sandbox: the API and console, the SuperLink (which runs
# the coordinator's ServerApp), and each company's SuperNode (which runs the ClientApp).
# Every container installs the same code, so every node computes the same code bundle hash
# as the one filed with a job (sandbox/bundle.py).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FLWR_TELEMETRY_ENABLED=0 \
    FLWR_DISABLE_UPDATE_CHECK=1 \
    SANDBOX_HOME=/sandbox

# torch first, the CPU build: a looser requirement pulls a multi-GB CUDA build.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

WORKDIR /app
# Every other dependency at the version its lock names (sandbox/requirements.lock, written by
# scripts/lock-requirements and covered by the code bundle hash filed with each job): two
# builds of one code bundle install the same dependencies.
COPY sandbox/requirements.lock ./requirements.lock
RUN pip install --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY sandbox ./sandbox
COPY coordinator ./coordinator
COPY clients ./clients
COPY policies ./policies
RUN pip install --no-deps . && pip check \
    && rm -rf /app/sandbox /app/coordinator /app/clients /app/policies
COPY deploy ./deploy

# Mount points of the named volumes, owned by the unprivileged user so that Docker gives a
# new volume the same owner: the sandbox's home, a company's node folder, the CA's private
# folder, the SuperLink's TLS folder, the public CA certificate, the regulator's key folder
# and public folder.
RUN useradd --create-home --uid 10001 sandbox \
    && mkdir -p /sandbox /company /ca /tls /ca-public /node-keys /regulator /regulator-public \
    && chown sandbox:sandbox /sandbox /company /ca /tls /ca-public /node-keys /regulator \
        /regulator-public
USER sandbox
WORKDIR /home/sandbox
CMD ["sandbox", "--help"]
