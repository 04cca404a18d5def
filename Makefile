# LEGO — the two commands a newcomer needs are `make run` and `make test`.
# Every target installs what it needs first (tools/setup-host, idempotent).

VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.lego-installed
RESULTS ?= $(CURDIR)/results
TRACE   ?=
TARGET  ?=
REPLICAS ?=
CLI     ?=
SCALING ?=

.PHONY: all setup build test bench run shell stop clean lint p4

all: build

$(STAMP): pyproject.toml setup.py tools/setup-host $(wildcard ext/*.pyx ext/*.pxd nfs/*/*.pyx control/proto/*.proto)
	tools/setup-host
	touch $@

setup: $(STAMP)

# Rebuild the Cython kernels in place (after editing ext/*.pyx).
build: $(STAMP)
	$(BIN)/python setup.py -q build_ext --inplace

test: build
	$(BIN)/python -m pytest -q

bench: build
	$(BIN)/python -m bench

# The whole system in Mininet (root + Mininet), else one offline NF instance (says why).
# Options: NF=kitsune|lucid  NF_OPTIONS="window=1" (the NF's options)  TRACE=file.pcap
#          TARGET=bmv2|soft  REPLICAS=N  CLI=1 (Mininet CLI during the run)
#          SCALING=off (the same run with the controller's scaling policy disabled)
#          FAULTS="20:kill:fq@nf1 40:lose:nf3" (faults injected, seconds into the replay)
#          FUSE=off|on (default: on, off with FAULTS): a process per
#          brick instead of one per replica; the ramp is sized from what runs
run: build
	$(BIN)/lego run --results $(RESULTS) $(if $(NF),--nf $(NF)) \
	  $(foreach o,$(NF_OPTIONS),--nf-option $(o)) $(if $(TRACE),--trace $(TRACE)) \
	  $(if $(TARGET),--target $(TARGET)) $(if $(REPLICAS),--replicas $(REPLICAS)) \
	  $(if $(filter 1,$(CLI)),--cli) $(if $(SCALING),--scaling $(SCALING)) \
	  $(if $(FUSE),--fuse $(FUSE)) \
	  $(if $(FAULTS),--faults "$(FAULTS)")

# p4runtime-shell on the running switch, as a backup client (reads; the controller
# stays primary). Its own environment (.venv-shell): it pins an old protobuf.
GRPC_ADDR ?= 127.0.0.1:9559
shell: $(STAMP)
	.venv-shell/bin/python -m p4runtime_sh --grpc-addr $(GRPC_ADDR) --device-id 0 \
	  --election-id 0,1

# Compile lego.p4 for BMv2 (lego.json) and generate its p4info, where p4c exists; both
# are committed, stamped with the source's sha256 (tests/test_p4info.py checks it).
p4: $(STAMP)
	@if command -v p4c >/dev/null 2>&1; then \
	  p4c --target bmv2 --arch v1model --std p4-16 -o p4src \
	      --p4runtime-files p4src/lego.p4info.txtpb p4src/lego.p4 && rm -f p4src/lego.p4i && \
	  $(BIN)/python -m lego.p4src.p4info --stamp --compiled-by "$$(p4c --version | head -1)"; \
	else \
	  echo "make p4: p4c is not on PATH: the committed p4src/lego.json and" \
	       "lego.p4info.txtpb stay in use (their sha256 is checked by make test)"; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .

# Stop every process of a LEGO Mininet run and delete its interfaces (our names only).
stop:
	@$(BIN)/python -c "from lego.topo.cleanup import cleanup; \
	from lego.topo.topology import load_topology; \
	print('make stop:', cleanup(load_topology().interface_names()).describe())"

clean:
	rm -rf build *.egg-info ext/*.c ext/*.so ext/*.html .pytest_cache $(RESULTS)
	find . -name __pycache__ -prune -exec rm -rf {} +
