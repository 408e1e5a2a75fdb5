// Package sim is a deterministic simulation of rollkeeper's rollout protocol, in the style of
// FoundationDB's and TigerBeetle's: the real protocol code (rollout.Reader, rollout.Next and the
// roll call's counting rule) drives many simulated agents over the deterministic ZooKeeper model
// (internal/zkmodel), under one scheduler that draws every choice from a seed. A failing seed
// replays exactly: go test -count=1 -v -run 'TestSim$' ./internal/sim -sim.seed=N.
//
// # The world
//
// Run(seed, cfg) draws 3-7 machines and 1-3 services a -> b -> c (each depends on the one before,
// and the deploy queue holds them in that order), each with a plan v1 -> v2, a minAvailable
// below the machine count and a failure policy (Pause or Rollback). A tiny operator writes the
// base znodes, the plans (staging/<svc>) and the deploy queue, unsigned, as
// controllers/rollingdeploy_zk.go does (queue entries first, then the plans; at once, or, in
// two seeds of three, once the agents had time to register v1); later it only does the operator's requeue (a service
// whose entry is gone while some registration is behind is queued again, a catch-up when its
// dependencies are complete), as a rare timer. Every machine starts running v1 of every service
// with a fresh agent, which must adopt (health-check) and register it. Each agent has one model
// session and, per service, a worker (a rollout.Reader over zkmodel.Reads on its session, its
// armed watches, its wait, its roll call and upgrade in progress) and a roll call answerer.
//
// The worker mirrors nodeagent/step.go and service.go: read with the Reader (Step.Used of the
// previous decision), Next, ReadMore while Next asks (at most 3 times), arm the step's watches
// (ChildrenW, or ExistsW; a changed znode means step again at once; watches that fired unwaited
// are forgotten), then execute with the same writes: ensure paths, start (switch, start, health
// check), adopt (health-check a process left by a previous agent, roll back one left
// mid-upgrade), register (create, or multi delete+create to replace), leave, stage (ephemeral
// sequential, ready), decide (a roll call round: set rollcall/<svc>, count answers of the
// registrations read before it with ChildrenW; then multi{check failures/<svc> version, set the
// staging child upgrading at its version, delete current/<svc>/<node>}; BadVersion or NoNode
// loses the turn), the upgrade (the process is down for a few ticks; then healthy: multi{create
// current, delete staging child}; unhealthy: record the HealthCheck failure with the bump of
// failures/<svc> as recordFailure does, switch back, start, the same multi) and complete (delete
// the deploy entries at their version). The answerer mirrors nodeagent's: ExistsW on
// rollcall/<svc>, answer a new round (multi delete the previous answer, create the new one)
// only while its worker's registration stands and the process runs; kicked on registration.
//
// # The scheduler
//
// Each tick picks one enabled event uniformly from the seed: a worker step (not waiting, or a
// watch it waits on was delivered), the arming and execution of a step decided earlier, an answerer turn, the delivery of a session's oldest pending
// watch event (zkmodel's per-session order; delaying delivery is simply choosing other events),
// a roll call recount after its watch fired, an upgrade finishing (not before its tick), a
// machine coming back, an agent restarting, a lingering session expiring, an agent noticing its
// session ended (a new session and fresh workers, as the real agent does per session). Timers
// (a worker's retryAt or error backoff, the roll call's wait passing with too few answers, the
// operator) are picked with low probability, or when nothing else is enabled.
//
// # Faults
//
// Drawn with small probability until the budget (0-4, from the seed) is spent: an agent crash
// (the host services keep running; its session lingers a few ticks, then expires; the agent
// restarts later; one mid-upgrade leaves the process stopped or running the new version
// unchecked), a machine crash (its processes stop at once, its session lingers, then expires;
// it comes back later with everything down), a session expiry alone (the agent notices and
// starts over; the services keep running), delayed watch delivery (the scheduler), and a bad
// version: on some machines (1 in 12) v2's first start fails its health check, so upgrades fail
// and halt the rollout (Pause) or roll it back (Rollback).
//
// # Invariants
//
//  1. Quorum: when a decision commits and the process stops, the other machines whose process
//     runs healthy and is registered (ground truth: the sim's processes and the model's
//     current/<svc>) number at least minAvailable. A machine that went down after the
//     decider's roll call round began still counts: the design accepts a failure concurrent
//     with the decision (docs/design.md, the quorum argument).
//  2. Order: a machine stops service S only after the service S depends on (its plan's
//     dependsOn; the chain a -> b -> c is also the deploy queue's order) completed: an agent
//     removed its last entry, or the operator judged it complete (rollout.Done) when it queued
//     a catch-up of a service depending on it. Either judgement is held to ground truth when
//     it is made: no registered machine runs another version, none is mid-upgrade in a live
//     session, at least max(1, minAvailable) registered machines serve the plan's version (a
//     crashed machine's lingering registration counts, as it does for the protocol).
//  3. Failures: no stop for the plan's version once a HealthCheck failure of it is recorded.
//  4. Convergence: once the budget is spent and every machine and agent is back, the run
//     reaches quiescence (nothing but timers can happen) within MaxSteps events, where, per
//     service: with no deploy entry left, every machine runs v2 and nobody is staged; halted by
//     a HealthCheck failure of v2, its entry is still queued, and heading the queue with the
//     Rollback policy every machine is back on v1 and nobody is staged (with Pause, v1 or v2);
//     otherwise its entry waits behind a halted service heading the queue (v1 or v2, nodes may
//     sit staged). Every process runs healthy, registered by its agent's live session with the
//     version it runs. Checking the state reached rather than the path also covers the
//     operator's requeue: a machine that fell behind after a completion is queued again.
//  5. zkmodel.Model.Check every 32 events and at the end (every event with Config.KeepTrace,
//     as -sim.seed runs).
//  6. Gates (worlds draw maxUnavailable, rack topologies with rack quorums): at a stop, the
//     other machines upgrading the service in a live session number below maxUnavailable, are
//     all of the stopping machine's rack and below its maxUnavailablePerDomain, and the other
//     machines of the rack serving it are at least the rack's quorum.
//  7. Canary (worlds draw a phase of 1-2 canaries promoted by a bake of 3-14 ticks): a stop
//     for the plan's version beyond the first Canary machines on it (registered on it or
//     upgrading to it, in a live session) comes only once Canary of them served it healthy
//     for the bake (ground truth: their processes' start, earlier than the registrations the
//     protocol judges by). A machine faulted since the decider's round
//     began is excused, as for the quorum; a crashed canary is replaced (documented).
//
// Findings are ordering holes the invariants above let through (they break no quorum). The
// first version of this simulation met three, in 156, 20 and 3 of 10,000 seeds; all came from
// the first, fixed since in rollout.Next. TestSim now fails when any comes back:
//
//   - start-ahead-of-order: a node whose service was down and that saw no registered peer
//     started the plan's target whatever the deploy queue said, so a machine back from a crash
//     while its peers had not registered yet started a dependent service on its new version
//     before the services it depends on completed. It now starts what is installed there (the
//     target only when nothing is) and the rollout upgrades it in turn.
//   - complete-ahead-of-order: completion does not look at the deploy queue's head: once every
//     registered node of a service ran the plan's version (after such a start, that node being
//     the only one registered yet), an agent removed the service's entry although the service
//     it depends on never completed.
//   - requeued-behind-halted: after such an early completion, the operator requeued the nodes
//     that registered later on v1 with a plain entry; when a service queued between them
//     halted, the entry waited behind it for good (a plain entry never becomes a catch-up).
//     Waiting behind a halted service the entry's service depends on (directly or not) is the
//     design, not this finding, and nothing waits "for good" while a timer (a retry) may still
//     move it.
//
// # Not modeled
//
// Real time and timeouts (ticks only; a session expires when the scheduler says), the
// interleaving inside a read (a Reader.Read with its ReadMore is one event; half the steps arm
// their watches and execute their writes in a later event, so others' writes land between a
// read and the watches and writes it leads to; the roll call and the upgrade are split into
// events too), connection loss without expiry, artifact download
// (a fetch succeeds at once) and the distribution of torrents, signatures (plans and entries
// are unsigned, read with Verify nil), releases, page-cache pinning, metrics, paused plans,
// plan changes, label selectors (every machine is selected), the ACL guard, agent panics, a
// version turning unhealthy after it registered (so the canaries' health checks through their
// bake: test/e2e TestGatesCanaryThenPromote), and the operator beyond writing the plans and
// queue and requeueing.
package sim
