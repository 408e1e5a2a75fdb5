package zksign

import "errors"

// UnsignedWarning is logged by a component that runs without signatures.
const UnsignedWarning = "INSECURE: --insecure-allow-unsigned-plans is set: plans, releases and deploy entries are neither signed nor verified. " +
	"Anyone who can write rollkeeper's tree in ZooKeeper can make every agent run commands as root"

// AgentTrust is the agent's verifier from its flags: the keys in trustFile, or with no file and
// the insecure opt-in, none (a nil Verifier: unsigned data is obeyed). Neither is an error that
// says what to do.
func AgentTrust(trustFile string, insecure bool) (Verifier, error) {
	if trustFile == "" {
		if insecure {
			return nil, nil
		}
		return nil, errors.New("no trusted keys: set --trusted-keys-file to the operator's public signing key(s) " +
			"(the chart mounts them from a ConfigMap), or, INSECURE, --insecure-allow-unsigned-plans to obey anyone who can write to ZooKeeper")
	}
	return OpenKeyFile(trustFile)
}

// OperatorKeys is the operator's signer and verifier from its flags: it signs with keyFile's
// key and trusts that key plus those in trustFile (optional; a rotation's old and new keys).
// With no key file and the insecure opt-in, both are nil: it writes unsigned data.
func OperatorKeys(keyFile, trustFile string, insecure bool) (*Signer, Verifier, error) {
	if keyFile == "" {
		if insecure {
			return nil, nil, nil
		}
		return nil, nil, errors.New("no signing key: set --signing-key-file to an ed25519 private key in PEM " +
			"(`openssl genpkey -algorithm ed25519`; the chart generates one in a Secret), or, INSECURE, --insecure-allow-unsigned-plans")
	}
	s, err := LoadSigner(keyFile)
	if err != nil {
		return nil, nil, err
	}
	if trustFile == "" {
		return s, NewKeyring(s.Public()), nil
	}
	kf, err := OpenKeyFile(trustFile, s.Public())
	if err != nil {
		return nil, nil, err
	}
	return s, kf, nil
}
