from gpuledger.cli import app

app()
