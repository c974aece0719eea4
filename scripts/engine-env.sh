# shellcheck shell=bash
# Source me: `source scripts/engine-env.sh` (bash or zsh).
#
# Puts the locally built Pulumi engine (scripts/bootstrap-engine.sh; built on
# first use, a no-op afterwards) first on PATH and configures fully offline
# operation: a file backend under .cache/, a fixed test passphrase, no update
# checks, no plugin downloads, no registry look-ups.
#
# Env knobs: ENGINE_ENV_QUIET=1 hides the bootstrap's progress lines.
#   ENGINE_K8S_AMBIENT=1 also puts the kubernetes provider on PATH, so it serves
#   whatever pulumi-kubernetes version the installed Python package asks for (the
#   engine then warns "using pulumi-resource-kubernetes from $PATH" on each run).
#   Without it, the installed pulumi_kubernetes must match the pin exactly.

_engine_env_main() {
  local script_dir project_dir out bin_dir py
  if [ -n "${BASH_SOURCE[0]:-}" ]; then
    script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  else # zsh
    script_dir="$(cd "$(dirname "${(%):-%x}")" && pwd)"
  fi
  project_dir="$(cd "$script_dir/.." && pwd)"

  if ! out="$(bash "$script_dir/bootstrap-engine.sh")"; then
    printf '%s\n' "$out" >&2
    echo "engine-env: bootstrap-engine.sh failed; environment not changed" >&2
    return 1
  fi
  bin_dir="$(printf '%s\n' "$out" | tail -n 1)"
  if [ -z "${ENGINE_ENV_QUIET:-}" ]; then
    printf '%s\n' "$out" | sed '$d' >&2
  fi
  if [ ! -x "$bin_dir/pulumi" ]; then
    echo "engine-env: no pulumi binary in '$bin_dir'" >&2
    return 1
  fi

  # Engine binaries first; drop bin dirs of other engine builds from PATH.
  PATH="$(printf '%s' "$PATH" | tr ':' '\n' | grep -v "^$project_dir/.cache/engine/" | paste -sd: -)"
  export PATH="$bin_dir${PATH:+:$PATH}"
  export ENGINE_BIN_DIR="$bin_dir"

  # Offline state: file backend and a private PULUMI_HOME (plugins, workspaces).
  mkdir -p "$project_dir/.cache/pulumi-state" "$project_dir/.cache/pulumi-home/plugins"
  export PULUMI_BACKEND_URL="file://$project_dir/.cache/pulumi-state"
  export PULUMI_HOME="$project_dir/.cache/pulumi-home"

  # Resource plugins built beside bin/ (plugins/<kind>-<name>-v<version>/) are
  # registered in the plugin cache, where the engine selects them by exact version.
  # The cache only lists real directories, so link the binary, not the directory.
  local plugin_dir name target
  for plugin_dir in "$bin_dir"/../plugins/*/; do
    [ -d "$plugin_dir" ] || continue
    name="$(basename "$plugin_dir")"
    target="$PULUMI_HOME/plugins/$name"
    if [ -L "$target" ]; then rm -f "$target"; fi
    mkdir -p "$target"
    rm -f "$target.partial" "$target.lock"
    for f in "$plugin_dir"*; do
      ln -sfn "$(cd "$(dirname "$f")" && pwd)/$(basename "$f")" "$target/$(basename "$f")"
    done
    if [ -n "${ENGINE_K8S_AMBIENT:-}" ]; then
      PATH="$PATH:$(cd "$plugin_dir" && pwd)"
    fi
  done
  if [ -z "${PULUMI_CONFIG_PASSPHRASE+x}" ] && [ -z "${PULUMI_CONFIG_PASSPHRASE_FILE:-}" ]; then
    export PULUMI_CONFIG_PASSPHRASE="local-test-passphrase"
  fi

  # No network: update checks, plugin downloads, registry resolution, SDK version probe.
  export PULUMI_SKIP_UPDATE_CHECK=true
  export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
  export PULUMI_DISABLE_REGISTRY_RESOLVE=true
  export PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK=true
  export PULUMI_DIY_BACKEND_NO_LEGACY_WARNING=true
  # Plugins are found on PATH ("ambient"), which this would switch off.
  unset PULUMI_IGNORE_AMBIENT_PLUGINS

  # The language host and the dynamic-provider launcher run this interpreter
  # (the one with requirements.txt installed) unless Pulumi.yaml names a virtualenv.
  if [ -z "${PULUMI_PYTHON_CMD:-}" ]; then
    py="$(command -v python3 || command -v python || true)"
    if [ -n "$py" ]; then
      py="$("$py" -c 'import sys; print(sys.executable)' 2>/dev/null || echo "$py")"
      export PULUMI_PYTHON_CMD="$py"
    fi
  fi
  return 0
}

_engine_env_main
_engine_env_rc=$?
unset -f _engine_env_main
# shellcheck disable=SC2317 # `return` when sourced, `exit` when run directly
return "$_engine_env_rc" 2>/dev/null || exit "$_engine_env_rc"
