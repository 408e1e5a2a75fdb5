package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
)

// zkProxy forwards one node's ZooKeeper connections through loopback listeners of the node's
// own address, one per ensemble server. Cut models a network partition between that node and
// ZooKeeper: bytes stop flowing both ways (they stay buffered, as TCP would retransmit them)
// and new connections hang, so the agent keeps running while its session expires on the
// servers. Heal lets traffic flow again. Nothing outside the test's loopback listeners is
// touched (there is no iptables here, and no rule could tell the agents apart: they all reach
// ZooKeeper from 127.0.0.1).
type zkProxy struct {
	node    string
	servers string // the connect string through the proxy

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	lns    []net.Listener

	mu    sync.Mutex
	open  chan struct{} // closed while traffic flows
	conns map[net.Conn]struct{}
}

// newZKProxy listens on host:0 for each server of the connect string upstream.
func newZKProxy(node, host, upstream string) (*zkProxy, error) {
	ctx, cancel := context.WithCancel(context.Background())
	p := &zkProxy{node: node, ctx: ctx, cancel: cancel, open: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	close(p.open)
	var addrs []string
	for _, up := range strings.Split(upstream, ",") {
		ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("zk proxy of %s: %w", node, err)
		}
		p.lns = append(p.lns, ln)
		addrs = append(addrs, ln.Addr().String())
		p.wg.Add(1)
		go p.accept(ln, up)
	}
	p.servers = strings.Join(addrs, ",")
	return p, nil
}

// Cut stops all traffic between the node and ZooKeeper.
func (p *zkProxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.open:
		p.open = make(chan struct{})
	default:
	}
}

// Heal lets traffic flow again.
func (p *zkProxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.open:
	default:
		close(p.open)
	}
}

// wait blocks while the proxy is cut.
func (p *zkProxy) wait() error {
	p.mu.Lock()
	open := p.open
	p.mu.Unlock()
	select {
	case <-open:
		return nil
	case <-p.ctx.Done():
		return p.ctx.Err()
	}
}

// Close stops the listeners and every connection.
func (p *zkProxy) Close() {
	p.cancel()
	for _, ln := range p.lns {
		ln.Close()
	}
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *zkProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ctx.Err() != nil {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *zkProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *zkProxy) accept(ln net.Listener, upstream string) {
	defer p.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			c.Close()
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer p.untrack(c)
			// A connection opened during a cut hangs until the heal, as a SYN into a
			// partition would (the client gives up on its own timeout).
			if p.wait() != nil {
				return
			}
			var d net.Dialer
			up, err := d.DialContext(p.ctx, "tcp", upstream)
			if err != nil {
				return
			}
			if !p.track(up) {
				up.Close()
				return
			}
			defer p.untrack(up)
			done := make(chan struct{}, 2)
			go func() { p.pipe(up, c); done <- struct{}{} }()
			go func() { p.pipe(c, up); done <- struct{}{} }()
			<-done
			// One direction ended: close both so the other copy returns too.
			c.Close()
			up.Close()
			<-done
		}()
	}
}

// pipe copies src to dst, holding each chunk while the proxy is cut.
func (p *zkProxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if p.wait() != nil {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				return
			}
			return
		}
	}
}
