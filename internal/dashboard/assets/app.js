// rollkeeper dashboard: keeps the server's objects by key and redraws only what changed. No
// framework and no external assets: the page must work without internet access.
'use strict';
(() => {
  const token = document.querySelector('meta[name=rk-token]').content;
  const actionsOn = document.querySelector('meta[name=rk-actions]').content === 'true';
  const STATES = ['Updated', 'Running', 'Downloading', 'Staged', 'Upgrading', 'Failed', 'Unreachable'];
  const STATE_TEXT = {
    Updated: 'online on the target', Running: 'online on an older version', Downloading: 'downloading the target',
    Staged: 'staged: ready to roll', Upgrading: 'upgrading', Failed: 'failed', Unreachable: 'unreachable',
  };
  const WAITING = new Set(['Waiting', 'Paused', 'Pending', 'Failed', 'Invalid']);

  const objs = new Map(); // store key -> object
  let meta = { access: {}, synced: false };
  let selected = decodeURIComponent((location.hash.match(/^#\/rd\/(.+)$/) || [])[1] || '');
  let picked = null; // {svc, node}
  // view of the selected RollingDeploy: its UID, and per service the node map's state.
  let view = null;
  // rkStats: what the benchmark and the browser test read (milliseconds of script, style and
  // layout per message: the snapshot's, then the latest update's).
  const stats = { firstRender: null, lastUpdate: null, maxUpdate: 0, updates: 0, cells: 0, seq: 0 };
  window.rkStats = stats;

  const $ = (id) => document.getElementById(id);
  // fill replaces parent's children with kids, leaving out the absent ones (null, undefined).
  const fill = (parent, ...kids) => parent.replaceChildren(...kids.filter((k) => k !== null && k !== undefined));
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      // style goes through the CSSOM: the page's CSP refuses style attributes.
      if (k === 'class') e.className = v; else if (k === 'text') e.textContent = v;
      else if (k === 'style') Object.assign(e.style, v); else e.setAttribute(k, v === true ? '' : v);
    }
    for (const k of kids) if (k !== null && k !== undefined) e.append(k);
    return e;
  }
  function svg(tag, attrs, ...kids) {
    const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
    for (const [k, v] of Object.entries(attrs || {})) if (k === 'text') e.textContent = v; else e.setAttribute(k, v);
    for (const k of kids) e.append(k);
    return e;
  }
  const bytes = (n) => {
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n) + ' ' + u[i];
  };
  const ago = (t) => {
    const s = Math.max(0, Math.round((Date.now() - new Date(t)) / 1000));
    if (s < 90) return s + ' s ago';
    if (s < 5400) return Math.round(s / 60) + ' min ago';
    if (s < 129600) return Math.round(s / 3600) + ' h ago';
    return Math.round(s / 86400) + ' d ago';
  };
  const when = (t) => t ? new Date(t).toLocaleString() + ' (' + ago(t) + ')' : '';

  function notice(text, isError) {
    const n = $('notice');
    n.textContent = text || '';
    n.className = isError ? 'error' : '';
  }
  function setConn(kind, text) {
    const c = $('conn');
    c.className = 'conn conn-' + kind;
    c.textContent = text;
  }

  const deploys = () => [...objs.entries()].filter(([k]) => k.startsWith('rd/')).map(([, v]) => v)
    .sort((a, b) => a.name.localeCompare(b.name));

  // ---- the list of RollingDeploys ----
  function renderDeploys(list) {
    const nav = $('deploys');
    fill(nav);
    if (!meta.access.deploys && meta.synced) {
      nav.append(el('p', { class: 'empty', text: 'Your RBAC does not let you list RollingDeploys.' }));
      return;
    }
    if (list.length === 0) {
      nav.append(el('p', { class: 'empty', text: meta.synced ? 'No RollingDeploys.' : 'Loading…' }));
      return;
    }
    for (const rd of list) {
      const ph = rd.status.phase || 'Pending';
      nav.append(el('a', { href: '#/rd/' + encodeURIComponent(rd.name), id: 'dl-' + rd.name, class: rd.name === selected ? 'selected' : '' },
        el('strong', { text: rd.name }), ' ', el('span', { class: 'badge p-' + ph, text: ph }),
        el('span', { class: 'sub', text: (rd.status.progress || '') + (rd.aborted ? ' · aborted' : rd.paused ? ' · paused' : '') })));
    }
  }

  // ---- the selected RollingDeploy ----
  function nodeSets(rd) {
    const by = new Map();
    for (const [k, ns] of objs) {
      if (!k.startsWith('ns/') || (ns.uid ? ns.uid !== rd.uid : ns.rollingDeploy !== rd.name)) continue;
      if (!by.has(ns.service)) by.set(ns.service, []);
      by.get(ns.service).push(ns);
    }
    // Per service: its shards (objects are replaced, never changed, so an unchanged list of
    // shards means unchanged nodes) and their nodes in order.
    const out = new Map();
    for (const [svc, shards] of by) {
      shards.sort((a, b) => a.shard - b.shard);
      out.set(svc, { shards, nodes: shards.flatMap((s) => s.nodes) });
    }
    return out;
  }

  function renderDetail(rd) {
    const d = $('detail');
    if (!rd) {
      view = null;
      fill(d, el('p', { class: 'empty', text: selected ? 'RollingDeploy ' + selected + ' not found.' : 'No RollingDeploy selected.' }));
      return;
    }
    if (!view || view.uid !== rd.uid) {
      view = { uid: rd.uid, maps: new Map(), groups: new Map(), node: '' };
      fill(d, el('div', { id: 'rd-head', class: 'panel' }), el('div', { id: 'rd-graph', class: 'panel graph' }),
        el('div', { id: 'rd-node', class: 'panel', hidden: true }), el('div', { id: 'rd-services' }),
        el('div', { id: 'rd-events', class: 'panel' }));
      $('rd-services').addEventListener('click', (e) => {
        const c = e.target.closest('.cell');
        if (!c) return;
        for (const p of document.querySelectorAll('.cell.picked')) p.classList.remove('picked');
        c.classList.add('picked');
        picked = { svc: c.dataset.svc, node: c.dataset.node };
        render();
      });
    }
    renderHead(rd);
    renderGraph(rd);
    renderServices(rd);
    renderNode(rd);
    renderEvents(rd);
  }

  function renderHead(rd) {
    const ph = rd.status.phase || 'Pending';
    const may = actionsOn && meta.access.patch;
    const why = !actionsOn ? 'this dashboard is read-only' : 'your RBAC does not allow patching RollingDeploys';
    const btn = (action, label, show, cls) => show ? el('button', {
      type: 'button', id: 'act-' + action, 'data-action': action, class: cls, disabled: !may, title: may ? '' : why, text: label,
    }) : null;
    const head = $('rd-head');
    fill(head,
      el('div', { class: 'row' }, el('h2', { text: rd.name }), el('span', { class: 'badge p-' + ph, id: 'rd-phase', text: ph }),
        el('span', { class: 'muted', text: rd.status.progress ? 'progress ' + rd.status.progress : '' }),
        rd.paused ? el('span', { class: 'badge p-Paused', text: 'paused' }) : null,
        rd.aborted ? el('span', { class: 'badge p-Failed', text: 'aborted ' + rd.aborted }) : null,
        el('span', { style: { flex: '1' } }),
        btn('pause', 'Pause', !rd.paused), btn('resume', 'Resume', rd.paused && !rd.aborted), btn('abort', 'Abort', !rd.aborted, 'danger')),
      conditions(rd));
    head.querySelectorAll('button[data-action]').forEach((b) => b.addEventListener('click', () => confirmAction(rd.name, b.dataset.action)));
  }

  function conditions(rd) {
    const t = el('table', { class: 'conds' });
    for (const c of rd.status.conditions || []) {
      t.append(el('tr', {}, el('td', { text: c.type }), el('td', { text: c.status }), el('td', { text: c.reason }),
        el('td', { class: 'muted', text: c.message || '' })));
    }
    return t;
  }

  function statusOf(rd, svc) {
    return (rd.status.services || []).find((s) => s.name === svc) || { name: svc, phase: 'Pending' };
  }

  // The service graph: a column per dependency depth, an arrow from each dependency.
  function renderGraph(rd) {
    const names = rd.services.map((s) => s.name);
    const spec = new Map(rd.services.map((s) => [s.name, s]));
    const depth = new Map();
    const depthOf = (n, seen) => {
      if (depth.has(n)) return depth.get(n);
      if (seen.has(n)) return 0; // a cycle (the API refuses them): draw it flat
      seen.add(n);
      let d = 0;
      for (const p of (spec.get(n) || {}).dependsOn || []) if (spec.has(p)) d = Math.max(d, depthOf(p, seen) + 1);
      depth.set(n, d);
      return d;
    };
    names.forEach((n) => depthOf(n, new Set()));
    const cols = [];
    for (const n of names) (cols[depth.get(n)] ||= []).push(n);
    const W = 170, H = 54, bw = 150, bh = 42;
    const pos = new Map();
    cols.forEach((col, x) => col.forEach((n, y) => pos.set(n, { x: 10 + x * W, y: 10 + y * H })));
    const rows = Math.max(1, ...cols.map((c) => c.length));
    const s = svg('svg', { width: 20 + cols.length * W, height: 20 + rows * H, role: 'img', 'aria-label': 'service graph' },
      svg('defs', {}, svg('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 6, markerHeight: 6, orient: 'auto' },
        svg('path', { d: 'M0,0 L10,5 L0,10 z', fill: '#9aa3b2' }))));
    for (const n of names) {
      for (const p of spec.get(n).dependsOn || []) {
        if (!pos.has(p)) continue;
        const a = pos.get(p), b = pos.get(n);
        s.append(svg('line', { x1: a.x + bw, y1: a.y + bh / 2, x2: b.x, y2: b.y + bh / 2 }));
      }
    }
    for (const n of names) {
      const st = statusOf(rd, n), p = pos.get(n), ph = st.phase || 'Pending';
      s.append(svg('g', { class: 'svc p-' + ph, id: 'g-' + n, transform: `translate(${p.x},${p.y})` },
        svg('rect', { width: bw, height: bh }),
        svg('text', { x: 8, y: 17, text: (st.position ? '#' + st.position + ' ' : '') + n + ' → ' + spec.get(n).version }),
        svg('text', { x: 8, y: 33, class: 'ph', text: ph + (st.total ? ` · ${st.updated}/${st.total} updated` : '') })));
    }
    fill($('rd-graph'), el('h3', { text: 'Services' }), s);
  }

  function renderServices(rd) {
    const box = $('rd-services');
    const sets = nodeSets(rd);
    const order = [...rd.services].sort((a, b) => (statusOf(rd, a.name).position || 99) - (statusOf(rd, b.name).position || 99));
    const keep = new Set();
    for (const sp of order) {
      const svc = sp.name;
      keep.add(svc);
      let sec = $('svc-' + svc);
      if (!sec) {
        sec = el('section', { id: 'svc-' + svc, class: 'panel' }, el('div', { class: 'svc-head' }),
          el('div', { class: 'nodemap', id: 'map-' + svc }));
      }
      box.append(sec); // in order (moves an existing one)
      renderServiceHead(sec.firstChild, rd, statusOf(rd, svc), sets.has(svc));
      renderMap(svc, sets.get(svc) || { shards: [], nodes: [] });
    }
    for (const sec of [...box.children]) {
      if (!keep.has(sec.id.slice(4))) { sec.remove(); view.maps.delete(sec.id.slice(4)); }
    }
  }

  function renderServiceHead(head, rd, st, haveNodes) {
    const ph = st.phase || 'Pending';
    const total = st.total || 0, online = st.online || 0, min = st.minAvailable || 0;
    const room = online - min;
    const bar = el('div', { class: 'fill' + (room <= 0 ? ' none' : room < 2 ? ' low' : ''), style: { width: `${total ? 100 * online / total : 0}%` } });
    const gauge = el('span', { class: 'gauge', id: 'gauge-' + st.name, title: `online ${online} of ${total}; minAvailable ${min}` },
      bar, el('span', { class: 'min', style: { left: `${total ? 100 * min / total : 0}%` } }));
    let swarm = '';
    if (st.downloadTotalBytes) {
      swarm = `download: ${Math.floor(100 * st.downloadedBytes / st.downloadTotalBytes)} % of ${bytes(st.downloadTotalBytes)}` +
        (st.downloading ? `, ${st.downloading} node(s) downloading (${st.downloadingFromOrigin || 0} from the origin)` : '');
    }
    // A service in its canary phase (its canaries wait for a promotion, or bake) may be
    // promoted from here, as with kubectl rollkeeper promote.
    const may = actionsOn && meta.access.patch;
    const promote = st.gate === 'canary' ? el('button', {
      type: 'button', id: 'promote-' + st.name, disabled: !may, text: 'Promote',
      title: may ? `promote the canaries of ${st.name} ${st.targetVersion || ''}` : (!actionsOn ? 'this dashboard is read-only' : 'your RBAC does not allow patching RollingDeploys'),
    }) : null;
    if (promote) promote.addEventListener('click', () => confirmAction(rd.name, 'promote', st.name));
    fill(head,
      el('div', { class: 'row' }, el('h3', { text: st.name }), el('span', { class: 'badge p-' + ph, id: 'phase-' + st.name, text: ph }),
        el('span', { class: 'muted', text: (st.position ? '#' + st.position + ' in the deploy order · ' : '') + 'target ' + (st.targetVersion || '') }),
        promote ? el('span', { style: { flex: '1' } }) : null, promote),
      el('div', { class: 'row' }, el('span', { text: `quorum headroom ${room}` }), gauge,
        el('span', { class: 'muted', text: `online ${online}/${total}, minAvailable ${min} · updated ${st.updated || 0}, staged ${st.staged || 0}` +
          (st.stagedRequired ? ` (of ${st.stagedRequired} needed)` : '') + `, upgrading ${st.upgrading || 0}, failed ${st.failed || 0}, unreachable ${st.unreachable || 0}` })),
      swarm ? el('div', { class: 'muted', id: 'swarm-' + st.name, text: swarm }) : null,
      st.message ? el('div', { class: WAITING.has(ph) ? 'blocking' : 'muted', id: 'msg-' + st.name, text: st.message }) : null,
      haveNodes ? legend() : el('p', { class: 'empty', text: meta.access.nodeSets === false ? 'No node map: your RBAC does not let you list RollingDeployNodeSets.' : 'No nodes mirrored yet.' }));
  }

  function legend() {
    return el('div', { class: 'legend' }, ...STATES.map((s) => el('span', {}, el('i', { class: 'cell s-' + s }), STATE_TEXT[s])));
  }

  // A node's zone and rack come from its registration, which an upgrading or unreachable node
  // does not have: it keeps the group it was last seen in (view.groups), not jump out of it.
  const groupOf = (e) => {
    const g = (e.zone && e.rack) ? e.zone + ' / ' + e.rack : (e.zone || e.rack || '');
    if (g) view.groups.set(e.name, g);
    return g || view.groups.get(e.name) || '';
  };
  const sig = (e) => [e.state, e.version || '', e.online ? 1 : 0, e.message || '', e.downloadedBytes || 0, e.totalBytes || 0,
    e.address || '', e.since || '', groupOf(e)].join('\u0000');
  function cellText(e) {
    return e.version || (e.state === 'Unreachable' ? '—' : '?');
  }
  function cellTitle(svc, e) {
    let t = `${e.name} · ${svc}: ${STATE_TEXT[e.state] || e.state}` + (e.version ? ` (${e.version})` : '');
    if (e.state === 'Downloading' && e.totalBytes) t += `\n${Math.floor(100 * (e.downloadedBytes || 0) / e.totalBytes)} % of ${bytes(e.totalBytes)}`;
    if (e.message) t += '\n' + e.message;
    return t;
  }
  function paint(c, svc, e) {
    c.className = 'cell s-' + e.state + (picked && picked.svc === svc && picked.node === e.name ? ' picked' : '');
    c.textContent = cellText(e);
    c.title = cellTitle(svc, e);
  }

  // renderMap draws one service's node map: rebuilt when nodes come or go or change group,
  // otherwise only the cells whose entry changed are touched.
  function renderMap(svc, set) {
    const box = $('map-' + svc);
    let m = view.maps.get(svc);
    if (m && m.shards.length === set.shards.length && m.shards.every((s, i) => s === set.shards[i])) return; // no shard changed
    const entries = set.nodes;
    const same = m && m.sigs.size === entries.length && entries.every((e) => m.sigs.has(e.name) && m.groups.get(e.name) === groupOf(e));
    if (m) m.shards = set.shards;
    if (!same) {
      m = { shards: set.shards, sigs: new Map(), groups: new Map(), cells: new Map() };
      view.maps.set(svc, m);
      const groups = new Map();
      for (const e of entries) {
        const g = groupOf(e);
        if (!groups.has(g)) groups.set(g, []);
        groups.get(g).push(e);
      }
      const frag = document.createDocumentFragment();
      const named = groups.size > 1 || !groups.has('');
      for (const g of [...groups.keys()].sort()) {
        const cells = el('div', { class: 'cells' });
        for (const e of groups.get(g)) {
          const c = document.createElement('span');
          c.id = 'c-' + svc + '-' + e.name;
          c.dataset.svc = svc;
          c.dataset.node = e.name;
          paint(c, svc, e);
          cells.append(c);
          m.cells.set(e.name, c);
          m.sigs.set(e.name, sig(e));
          m.groups.set(e.name, g);
        }
        frag.append(el('div', { class: 'group', 'data-group': g }, named ? el('div', { class: 'label', text: g || '(no zone or rack)' }) : null, cells));
      }
      fill(box, frag);
      return;
    }
    for (const e of entries) {
      const s = sig(e);
      if (m.sigs.get(e.name) !== s) {
        m.sigs.set(e.name, s);
        paint(m.cells.get(e.name), svc, e);
      }
    }
  }

  function renderNode(rd) {
    const box = $('rd-node');
    if (!picked) { box.hidden = true; view.node = ''; return; }
    const e = ((nodeSets(rd).get(picked.svc) || {}).nodes || []).find((x) => x.name === picked.node);
    if (!e) { box.hidden = true; view.node = ''; return; }
    const fail = (statusOf(rd, picked.svc).failedNodes || []).find((f) => f.node === e.name);
    const lines = [
      `state: ${STATE_TEXT[e.state] || e.state}`, `version: ${e.version || 'unknown'}`, `online: ${e.online ? 'yes' : 'no'}`,
      e.address ? `address: ${e.address}` : '', e.since ? `since: ${when(e.since)}` : '',
      e.zone ? `zone: ${e.zone}` : '', e.rack ? `rack: ${e.rack}` : '',
      e.totalBytes ? `download: ${bytes(e.downloadedBytes || 0)} of ${bytes(e.totalBytes)}` : '',
      fail ? `last failure: ${fail.kind} on ${fail.version}: ${fail.reason}` : (e.message ? `message: ${e.message}` : ''),
    ].filter(Boolean);
    box.hidden = false;
    // Redrawn only when its text changes: every update of the deploy comes here, and replacing
    // unchanged details would drop the user's text selection (an address being copied).
    const title = `${e.name} · ${picked.svc}`, text = lines.join('\n');
    if (view.node === title + '\n' + text) return;
    view.node = title + '\n' + text;
    fill(box, el('h3', { text: title }), el('div', { class: 'nodedetail', id: 'node-detail', text }));
  }

  function renderEvents(rd) {
    const evs = [...objs.entries()].filter(([k, v]) => k.startsWith('ev/') && (v.uid ? v.uid === rd.uid : v.rollingDeploy === rd.name))
      .map(([, v]) => v).sort((a, b) => new Date(b.time) - new Date(a.time)).slice(0, 200);
    const ol = el('ol', { class: 'events', id: 'events' });
    for (const ev of evs) {
      ol.append(el('li', { class: ev.type }, el('time', { datetime: ev.time, text: new Date(ev.time).toLocaleTimeString() }),
        el('span', { class: 'reason', text: ev.reason }), ev.message, ev.count > 1 ? el('span', { class: 'muted', text: ` ×${ev.count}` }) : null));
    }
    const none = meta.access.events === false ? 'No timeline: your RBAC does not let you list events in namespace default.' : 'No events.';
    fill($('rd-events'), el('h3', { text: 'Events' }), evs.length ? ol : el('p', { class: 'empty', text: none }));
  }

  // ---- actions ----
  const CONFIRM = {
    pause: (n) => `Pause rollingdeploy/${n}? Upgrades under way finish; no node starts a new one.`,
    resume: (n) => `Resume rollingdeploy/${n}? Nodes start upgrading again as the quorum allows.`,
    abort: (n) => `Abort rollingdeploy/${n}? The rollout stops for good: upgrades under way finish, nothing that runs is touched, and resume is refused until the annotation rollkeeper.io/aborted is removed.`,
    promote: (n, svc) => `Promote the canaries of ${svc} in rollingdeploy/${n}? The other nodes follow, as the quorum and gates allow.`,
  };
  function confirmAction(name, action, svc) {
    const dlg = $('confirm');
    $('confirm-text').textContent = CONFIRM[action](name, svc);
    const ok = $('confirm-ok'), cancel = $('confirm-cancel');
    ok.textContent = action[0].toUpperCase() + action.slice(1);
    const done = (go) => {
      ok.onclick = cancel.onclick = null;
      dlg.close();
      if (go) act(name, action, svc);
    };
    ok.onclick = () => done(true);
    cancel.onclick = () => done(false);
    dlg.showModal();
  }
  async function act(name, action, svc) {
    notice(action + ' ' + name + (svc ? ' ' + svc : '') + '…');
    try {
      const r = await fetch('/api/rollingdeploys/' + encodeURIComponent(name) + '/' + action + (svc ? '?service=' + encodeURIComponent(svc) : ''),
        { method: 'POST', headers: { 'X-Rollkeeper-Token': token } });
      const body = await r.json().catch(() => ({ error: r.statusText }));
      notice(body.message || body.error || r.statusText, !r.ok);
    } catch (err) {
      notice(String(err), true);
    }
  }

  // ---- the whole page ----
  function render() {
    if (meta.error) notice(meta.error, true);
    else if (meta.access.denied && !$('notice').textContent) notice(meta.access.denied, true);
    const list = deploys();
    if (!selected && list.length) selected = list[0].name;
    renderDeploys(list);
    renderDetail(list.find((rd) => rd.name === selected));
    stats.cells = document.getElementsByClassName('cell').length;
  }

  window.addEventListener('hashchange', () => {
    const m = location.hash.match(/^#\/rd\/(.+)$/);
    selected = m ? decodeURIComponent(m[1]) : '';
    picked = null;
    render();
  });

  function connect() {
    const es = new EventSource('/api/events');
    es.onopen = () => setConn('ok', 'live');
    es.onerror = () => setConn('down', 'disconnected: reconnecting…');
    es.onmessage = (ev) => {
      const t0 = performance.now();
      const m = JSON.parse(ev.data);
      if (m.full) objs.clear();
      for (const c of m.changes) {
        if (c.v === undefined) objs.delete(c.k); else objs.set(c.k, c.v);
      }
      meta = m.meta;
      setConn(meta.synced ? 'ok' : 'wait', meta.synced ? 'live' : 'loading…');
      render();
      void document.body.offsetHeight; // count style and layout too
      const dt = performance.now() - t0;
      if (stats.firstRender === null && meta.synced) stats.firstRender = dt;
      else { stats.lastUpdate = dt; stats.maxUpdate = Math.max(stats.maxUpdate, dt); }
      stats.updates++;
      stats.seq = m.seq;
    };
  }
  connect();
})();
