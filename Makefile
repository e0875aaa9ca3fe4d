# cryptfs — two commands on a fresh Debian/Ubuntu machine: `make demo`, `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEB_PACKAGES := fuse3 libfuse3-3 libfuse3-dev pkg-config gcc python3-dev python3-venv git \
                sqlite3 rsync tar attr zsh fish sshfs openssh-sftp-server
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# make install-user: cryptfs for this user, outside the checkout (see the README).
XDG_DATA_HOME   ?= $(HOME)/.local/share
XDG_CONFIG_HOME ?= $(HOME)/.config
USER_VENV ?= $(XDG_DATA_HOME)/cryptfs/venv
USER_BIN  ?= $(HOME)/.local/bin
PIP_FLAGS ?=

.PHONY: install system-deps demo test test-heavy test-posix lint bench clean install-user docs

install: system-deps $(BIN)/cryptfs

system-deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

$(BIN)/cryptfs: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

demo: install
	bash examples/demo.sh

test: install
	$(BIN)/python -m pytest -q

test-heavy: install
	$(BIN)/python -m pytest -q -m slow

# pjdfstest (https://github.com/pjd/pjdfstest, cloned by you into DIR, never committed) against
# a fresh mount, as root, with -o allow_other; built in DIR when needed. More options
# (--compare gocryptfs --compare /tmp --jobs 2 --only 'link/*' ...) go in POSIX_ARGS.
PJDFSTEST ?=
POSIX_ARGS ?=
test-posix: install
	@if [ -z "$(PJDFSTEST)" ]; then \
	  echo "usage: make test-posix PJDFSTEST=DIR [POSIX_ARGS='--compare gocryptfs ...']"; \
	  echo "  DIR: git clone https://github.com/pjd/pjdfstest DIR"; exit 2; fi
	@if [ ! -x "$(PJDFSTEST)/pjdfstest" ]; then \
	  missing=""; for p in autoconf automake libtool gcc make; do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	  done; \
	  if [ -n "$$missing" ]; then $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; fi; \
	  cd "$(PJDFSTEST)" && autoreconf -ifs && ./configure -q && $(MAKE) pjdfstest; fi
	$(SUDO) $(BIN)/python -m tests.posix.run_pjdfstest --pjdfstest "$(PJDFSTEST)" $(POSIX_ARGS)

lint: install
	$(BIN)/ruff check cryptfs tests bench tools

# Regenerate the man page and the shell completions from the argparse parser.
docs: install
	$(BIN)/python tools/gendocs.py

install-user: system-deps
	$(PYTHON) -m venv $(USER_VENV)
	$(USER_VENV)/bin/python -m pip install -q $(PIP_FLAGS) --upgrade .
	mkdir -p $(USER_BIN)
	ln -sf $(USER_VENV)/bin/cryptfs $(USER_VENV)/bin/mount.fuse.cryptfs $(USER_BIN)/
	install -D -m 0644 cryptfs/data/cryptfs.1 $(XDG_DATA_HOME)/man/man1/cryptfs.1
	install -D -m 0644 cryptfs/data/cryptfs.bash $(XDG_DATA_HOME)/bash-completion/completions/cryptfs
	install -D -m 0644 cryptfs/data/_cryptfs $(XDG_DATA_HOME)/zsh/site-functions/_cryptfs
	install -D -m 0644 cryptfs/data/cryptfs.fish $(XDG_CONFIG_HOME)/fish/completions/cryptfs.fish
	install -D -m 0644 examples/systemd/cryptfs@.service $(XDG_CONFIG_HOME)/systemd/user/cryptfs@.service
	@echo "Installed $(USER_BIN)/cryptfs (man cryptfs; completions for bash, zsh, fish; systemd user unit cryptfs@.service)."
	@case ":$$PATH:" in *":$(USER_BIN):"*) ;; *) echo "Add $(USER_BIN) to your PATH (Debian's ~/.profile does so at the next login if it exists)." ;; esac

bench: install
	@missing=""; for p in gocryptfs securefs; do command -v $$p >/dev/null || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; fi
	$(BIN)/python bench/blocksize.py --quick
	$(BIN)/python bench/syncbench.py
	$(BIN)/python bench/fsbench.py --reps 3 --where tmpfs,disk
	$(BIN)/python bench/scaling.py --out bench/SCALING.md

clean:
	rm -rf $(VENV) demo .pytest_cache .ruff_cache .hypothesis
