package cluster

import (
	"bufio"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// kubelet creates KUBE-* chains (KUBE-IPTABLES-HINT, KUBE-KUBELET-CANARY, KUBE-FIREWALL with
// jumps from INPUT and OUTPUT) in every table of both families, for the benefit of kube-proxy,
// and has no setting to skip them. The cluster removes the ones it did not find at start.

var iptablesFamilies = []string{"iptables", "ip6tables"}

// kubeChains lists the KUBE-* chains per "family/table".
func kubeChains() (map[string][]string, error) {
	out := map[string][]string{}
	for _, fam := range iptablesFamilies {
		dump, err := iptablesSave(fam)
		if err != nil {
			return nil, err
		}
		for table, chains := range parseChains(dump) {
			for _, ch := range chains {
				if strings.HasPrefix(ch, "KUBE-") {
					out[fam+"/"+table] = append(out[fam+"/"+table], ch)
				}
			}
		}
	}
	return out, nil
}

// KubeChainsAdded lists the KUBE-* chains that exist now but not in pre (for teardown checks).
func KubeChainsAdded(pre map[string][]string) ([]string, error) {
	now, err := kubeChains()
	if err != nil {
		return nil, err
	}
	var added []string
	for key, chains := range now {
		for _, ch := range chains {
			if !contains(pre[key], ch) {
				added = append(added, key+"/"+ch)
			}
		}
	}
	return added, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func iptablesSave(fam string) (string, error) {
	bin, err := exec.LookPath(fam + "-save")
	if err != nil {
		return "", nil // no iptables: kubelet creates nothing either
	}
	out, err := exec.Command(bin).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("cluster: %s-save: %w: %s", fam, err, out)
	}
	return string(out), nil
}

func parseChains(dump string) map[string][]string {
	m := map[string][]string{}
	table := ""
	sc := bufio.NewScanner(strings.NewReader(dump))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "*"):
			table = line[1:]
		case strings.HasPrefix(line, ":") && table != "":
			if f := strings.Fields(line[1:]); len(f) > 0 {
				m[table] = append(m[table], f[0])
			}
		}
	}
	return m
}

// removeKubeChains deletes the KUBE-* chains not listed in pre: first the rules of other
// chains that jump to them, then their rules, then the chains.
func removeKubeChains(pre map[string][]string) error {
	var errs []error
	for _, fam := range iptablesFamilies {
		dump, err := iptablesSave(fam)
		if err != nil || dump == "" {
			errs = append(errs, err)
			continue
		}
		added := map[string]map[string]bool{}
		for table, chains := range parseChains(dump) {
			for _, ch := range chains {
				if strings.HasPrefix(ch, "KUBE-") && !contains(pre[fam+"/"+table], ch) {
					if added[table] == nil {
						added[table] = map[string]bool{}
					}
					added[table][ch] = true
				}
			}
		}
		var jumps [][]string
		table := ""
		sc := bufio.NewScanner(strings.NewReader(dump))
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "*") {
				table = line[1:]
				continue
			}
			if !strings.HasPrefix(line, "-A ") {
				continue
			}
			args := splitRule(line)
			if len(args) < 2 || added[table][args[1]] {
				continue // a rule inside a chain that goes anyway
			}
			for i := 0; i+1 < len(args); i++ {
				if (args[i] == "-j" || args[i] == "-g") && added[table][args[i+1]] {
					jumps = append(jumps, append([]string{"-t", table, "-D"}, args[1:]...))
					break
				}
			}
		}
		for _, j := range jumps {
			if out, err := exec.Command(fam, append([]string{"-w"}, j...)...).CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("cluster: %s %s: %w: %s", fam, strings.Join(j, " "), err, out))
			}
		}
		for table, chains := range added {
			for ch := range chains {
				for _, op := range []string{"-F", "-X"} {
					if out, err := exec.Command(fam, "-w", "-t", table, op, ch).CombinedOutput(); err != nil {
						errs = append(errs, fmt.Errorf("cluster: %s -t %s %s %s: %w: %s", fam, table, op, ch, err, out))
					}
				}
			}
		}
	}
	return errors.Join(errs...)
}

// splitRule splits an iptables-save rule into arguments, keeping double-quoted ones whole.
func splitRule(line string) []string {
	var args []string
	var cur strings.Builder
	inQuote, have := false, false
	for i := 0; i < len(line); i++ {
		ch := line[i]
		switch {
		case ch == '\\' && inQuote && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
		case ch == '"':
			inQuote, have = !inQuote, true
		case ch == ' ' && !inQuote:
			if have {
				args = append(args, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteByte(ch)
			have = true
		}
	}
	if have {
		args = append(args, cur.String())
	}
	return args
}
