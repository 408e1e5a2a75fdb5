#!/usr/bin/env bash
# install-deps.sh installs and builds everything rollkeeper's tests and demo need, idempotently,
# on a fresh Debian machine (as root, or with sudo for the apt step):
#
#   zookeeper       Debian's package (/usr/share/java/zookeeper.jar), if missing
#   kube-apiserver  bin/kube-apiserver, built from the Go module proxy via hack/k8s
#   etcd            bin/etcd, built from the Go module proxy via hack/etcd
#   controller-gen  bin/controller-gen, pinned below
#   helm            bin/helm, pinned below (the chart tests in test/chart run it)
#   kubelet, kube-controller-manager, kube-scheduler
#                   bin/, built like kube-apiserver, for the real-cluster e2e (test/cluster)
#   node-runtime    containerd, runc and the CNI plugins, Debian's packages, if missing
#   systemd         Debian's systemd package (the manager and systemd-socket-proxyd), if missing:
#                   the systemd backend's tests run it as PID 1 of new namespaces (test/systemd)
#   chromium        Debian's chromium package, if missing: the dashboard's browser tests and
#                   benchmark drive it headless (internal/dashboard, test/e2e)
#   prometheus      Debian's prometheus package, if missing: the alert gate's e2e test queries a
#                   real Prometheus (test/e2e)
#   kubectl         bin/kubectl via hack/k8s/kubectl (only when asked for: `make kubectl`)
#
# Usage: hack/install-deps.sh [component...]   (default: all of them)
#
# The control-plane binaries are rebuilt only when missing or when their build module changed
# (go.mod, go.sum, sources or version stamp), tracked by a stamp file next to the binary.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
LOCALBIN=${LOCALBIN:-$ROOT/bin}
CONTROLLER_GEN_VERSION=${CONTROLLER_GEN_VERSION:-v0.23.0}
HELM_VERSION=${HELM_VERSION:-v3.22.0}
ZOOKEEPER_JAR=/usr/share/java/zookeeper.jar

mkdir -p "$LOCALBIN"

log() { printf '[install-deps] %s\n' "$*"; }
die() { printf '[install-deps] ERROR: %s\n' "$*" >&2; exit 1; }

# timed NAME CMD... runs CMD and reports how long it took.
timed() {
	local name=$1 start=$SECONDS
	shift
	"$@"
	log "$name: done in $((SECONDS - start))s"
}

# EXPECT is roughly how long each build takes the first time on a 2-core machine (module
# downloads included); the Go build cache makes later builds seconds.
declare -A EXPECT=(
	[kube-apiserver]="about 12 minutes"
	[kubelet]="about 4.5 minutes"
	[kube-controller-manager]="about 3 minutes"
	[kube-scheduler]="about 2 minutes"
	[kubectl]="about 3 minutes"
	[etcd]="about 2.5 minutes"
	[controller-gen]="about a minute"
	[helm]="about 4 minutes"
)

# with_heartbeat NAME CMD... runs CMD and says every 30 s that NAME is still being built: go
# build prints nothing for minutes.
with_heartbeat() {
	local name=$1 start=$SECONDS pid rc=0
	shift
	"$@" &
	pid=$!
	while ! wait_up_to 30 "$pid"; do
		log "$name: still building ($((SECONDS - start))s so far, ${EXPECT[$name]:-minutes} the first time)"
	done
	wait "$pid" || rc=$?
	return "$rc"
}

# wait_up_to SECONDS PID returns 0 once PID has exited, 1 if it still runs after SECONDS.
wait_up_to() {
	local deadline=$((SECONDS + $1))
	while kill -0 "$2" 2>/dev/null; do
		if [ "$SECONDS" -ge "$deadline" ]; then
			return 1
		fi
		sleep 1
	done
	return 0
}

as_root() {
	if [ "$(id -u)" -eq 0 ]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo "$@"
	else
		die "need root (or sudo) to run: $*"
	fi
}

# reports WANT CMD... tells whether CMD's output mentions WANT. The output is read whole first:
# with pipefail, `CMD | grep -q` fails at random when grep exits on the first match and CMD dies
# of SIGPIPE writing its next line (etcd --version prints four).
reports() {
	local want=$1 out
	shift
	out=$("$@" 2>/dev/null) || true
	[[ $out == *"$want"* ]]
}

# stamp_of FILE... prints a digest of the given files plus any extra words in $STAMP_EXTRA.
stamp_of() {
	{
		cat "$@"
		printf '%s\n' "${STAMP_EXTRA:-}"
	} | sha256sum | cut -d' ' -f1
}

# install_debian_command CMD HINT PKG... installs Debian packages PKG when the command CMD is
# missing (HINT says what to do without apt-get).
install_debian_command() {
	local cmd=$1 hint=$2
	shift 2
	if command -v "$cmd" >/dev/null 2>&1; then
		log "$cmd: present ($(command -v "$cmd"))"
		return
	fi
	command -v apt-get >/dev/null 2>&1 || die "$cmd missing and apt-get not found: $hint"
	log "$cmd: installing Debian packages: $*"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
	command -v "$cmd" >/dev/null 2>&1 || die "$cmd installed but not on PATH"
}

install_chromium() {
	install_debian_command chromium "install Chromium (or set ROLLKEEPER_CHROMIUM to a Chrome binary)" chromium fonts-dejavu-core
}

# The package's own service does not start where no init runs (a container); the tests start
# their own Prometheus either way.
install_prometheus() {
	install_debian_command prometheus "install Prometheus (or set ROLLKEEPER_PROMETHEUS to its binary)" prometheus
}

install_zookeeper() {
	if [ -f "$ZOOKEEPER_JAR" ]; then
		log "zookeeper: present ($ZOOKEEPER_JAR)"
		return
	fi
	command -v apt-get >/dev/null 2>&1 || die "zookeeper missing and apt-get not found: install ZooKeeper so that $ZOOKEEPER_JAR exists"
	local pkgs=(zookeeper)
	command -v java >/dev/null 2>&1 || pkgs+=(default-jre-headless)
	log "zookeeper: installing Debian packages: ${pkgs[*]}"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pkgs[@]}"
	[ -f "$ZOOKEEPER_JAR" ] || die "zookeeper installed but $ZOOKEEPER_JAR is missing"
}

# module_version DIR MODULE prints MODULE's required version from DIR/go.mod.
module_version() {
	awk -v m="$2" '($1 == m || ($1 == "require" && $2 == m)) { for (i = 1; i <= NF; i++) if ($i ~ /^v[0-9]/) { print $i; exit } }' "$1/go.mod"
}

# build_binary NAME DIR PKG VERSION_CHECK LDFLAGS [VERSION_ARGS]
# Builds bin/NAME from package PKG of the module in DIR unless bin/NAME is current. A binary
# without a stamp is adopted when "NAME VERSION_ARGS" (default --version) mentions VERSION_CHECK.
build_binary() {
	local name=$1 dir=$2 pkg=$3 want=$4 ldflags=$5 vargs=${6:---version}
	local bin=$LOCALBIN/$name stampfile=$LOCALBIN/.$name.stamp
	local stamp
	stamp=$(STAMP_EXTRA="$pkg $ldflags" stamp_of "$dir"/go.mod "$dir"/go.sum "$dir"/*.go)
	if [ -x "$bin" ]; then
		if [ -f "$stampfile" ] && [ "$(cat "$stampfile")" = "$stamp" ]; then
			log "$name: up to date ($bin)"
			return
		fi
		if [ ! -f "$stampfile" ] && reports "$want" "$bin" $vargs; then
			log "$name: adopting existing $bin (reports $want)"
			echo "$stamp" >"$stampfile"
			return
		fi
		log "$name: $dir changed since the last build; rebuilding"
	fi
	log "$name: building $pkg $want from the Go module proxy (the first time takes ${EXPECT[$name]:-minutes}; later builds are cached)"
	rm -f "$stampfile"
	with_heartbeat "$name" bash -c 'cd "$1" && CGO_ENABLED=0 go build -ldflags "$2" -o "$3" "$4"' _ "$dir" "$ldflags" "$bin.tmp" "$pkg"
	if ! reports "$want" "$bin.tmp" $vargs; then
		local out rc=0
		out=$("$bin.tmp" $vargs 2>&1) || rc=$?
		die "$name built but \`$name $vargs\` does not report $want; it exited $rc and printed: $out"
	fi
	mv -f "$bin.tmp" "$bin"
	echo "$stamp" >"$stampfile"
}

# install_kube NAME builds bin/NAME from k8s.io/kubernetes/cmd/NAME in hack/k8s.
install_kube() {
	local name=$1 v major minor
	v=$(module_version hack/k8s k8s.io/kubernetes)
	[ -n "$v" ] || die "cannot read the k8s.io/kubernetes version from hack/k8s/go.mod"
	major=${v#v}
	major=${major%%.*}
	minor=${v#v*.}
	minor=${minor%%.*}
	# Without the version stamp the server reports v0.0.0-master+$Format:%H$, which kubectl and
	# helm refuse to parse.
	local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$v -X k8s.io/component-base/version.gitMajor=$major -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
	build_binary "$name" hack/k8s "k8s.io/kubernetes/cmd/$name" "Kubernetes $v" "$ldflags"
}

# The node runtime of the real-cluster e2e (test/cluster): containerd 1.6, runc and the CNI
# plugins, all from Debian. kubelet only needs a CNI configuration to report the network ready;
# the chart's pods use the host network.
install_node_runtime() {
	local missing=()
	command -v containerd >/dev/null 2>&1 || missing+=(containerd)
	command -v runc >/dev/null 2>&1 || missing+=(runc)
	[ -x /usr/lib/cni/loopback ] || missing+=(containernetworking-plugins)
	if [ ${#missing[@]} -eq 0 ]; then
		log "node runtime: present ($(containerd --version | awk '{print $3}'), runc, CNI plugins)"
		return
	fi
	command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and apt-get not found"
	log "node runtime: installing Debian packages: ${missing[*]}"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
	# The package's own service must not run: the tests start containerd with their own config.
	if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
		as_root systemctl disable --now containerd >/dev/null 2>&1 || true
	fi
}

# The systemd backend's tests (nodeagent/backend, test/systemd) boot a private systemd in new
# namespaces; nothing of it runs on the host, so only the files are needed. util-linux (unshare,
# setpriv) is essential in Debian.
install_systemd() {
	if [ -x /lib/systemd/systemd ] && [ -x /lib/systemd/systemd-socket-proxyd ]; then
		log "systemd: present ($(/lib/systemd/systemd --version | awk "NR == 1"))"
		return
	fi
	command -v apt-get >/dev/null 2>&1 || die "systemd missing and apt-get not found: install systemd so that /lib/systemd/systemd exists"
	log "systemd: installing Debian package: systemd"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends systemd
	[ -x /lib/systemd/systemd-socket-proxyd ] || die "systemd installed but /lib/systemd/systemd-socket-proxyd is missing"
}

install_etcd() {
	local v
	v=$(module_version hack/etcd go.etcd.io/etcd/server/v3)
	[ -n "$v" ] || die "cannot read the etcd version from hack/etcd/go.mod"
	build_binary etcd hack/etcd . "etcd Version: ${v#v}" "-s -w"
}

# kubectl is optional (not in the default set): the demo and the docs use it to poke the stack,
# and machines without one can build it with `make kubectl`.
install_kubectl() {
	local v major minor
	v=$(module_version hack/k8s/kubectl k8s.io/kubernetes)
	[ -n "$v" ] || die "cannot read the k8s.io/kubernetes version from hack/k8s/kubectl/go.mod"
	major=${v#v}
	major=${major%%.*}
	minor=${v#v*.}
	minor=${minor%%.*}
	local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$v -X k8s.io/component-base/version.gitMajor=$major -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
	build_binary kubectl hack/k8s/kubectl k8s.io/kubernetes/cmd/kubectl "Client Version: $v" "$ldflags" "version --client"
}

install_controller_gen() {
	local bin=$LOCALBIN/controller-gen
	if [ -x "$bin" ] && reports "$CONTROLLER_GEN_VERSION" "$bin" --version; then
		log "controller-gen: up to date ($bin $CONTROLLER_GEN_VERSION)"
		return
	fi
	log "controller-gen: installing $CONTROLLER_GEN_VERSION into $LOCALBIN (the first time takes ${EXPECT[controller-gen]})"
	with_heartbeat controller-gen env GOBIN="$LOCALBIN" CGO_ENABLED=0 go install "sigs.k8s.io/controller-tools/cmd/controller-gen@$CONTROLLER_GEN_VERSION"
}

# helm built with `go install` reports its version without the patch level (v3.22 for v3.22.0),
# so the module version recorded in the binary is checked instead.
install_helm() {
	local bin=$LOCALBIN/helm
	if [ -x "$bin" ] && [ "$(go version -m "$bin" 2>/dev/null | awk '$1 == "mod" { print $3 }')" = "$HELM_VERSION" ]; then
		log "helm: up to date ($bin $HELM_VERSION)"
		return
	fi
	log "helm: installing $HELM_VERSION into $LOCALBIN (the first time takes ${EXPECT[helm]})"
	with_heartbeat helm env GOBIN="$LOCALBIN" CGO_ENABLED=0 go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
}

command -v go >/dev/null 2>&1 || die "go is not installed"

components=("$@")
[ ${#components[@]} -gt 0 ] || components=(zookeeper etcd kube-apiserver controller-gen helm node-runtime systemd chromium prometheus kubelet kube-controller-manager kube-scheduler)
total=$SECONDS
for c in "${components[@]}"; do
	case $c in
	zookeeper) timed zookeeper install_zookeeper ;;
	kube-apiserver | kubelet | kube-controller-manager | kube-scheduler) timed "$c" install_kube "$c" ;;
	node-runtime) timed node-runtime install_node_runtime ;;
	systemd) timed systemd install_systemd ;;
	chromium) timed chromium install_chromium ;;
	prometheus) timed prometheus install_prometheus ;;
	etcd) timed etcd install_etcd ;;
	controller-gen) timed controller-gen install_controller_gen ;;
	helm) timed helm install_helm ;;
	kubectl) timed kubectl install_kubectl ;;
	*) die "unknown component $c (want zookeeper, kube-apiserver, etcd, controller-gen, helm, kubectl, kubelet, kube-controller-manager, kube-scheduler, node-runtime, systemd, chromium, prometheus)" ;;
	esac
done
log "all done in $((SECONDS - total))s"
