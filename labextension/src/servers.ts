import { Notification } from '@jupyterlab/apputils';

import { HubEvent, IServerInfo } from './api';
import { Actions } from './actions';
import { isWebKind } from './apptab';
import { ago, button, h, select, syncOptions } from './dom';
import { LaunchForm } from './launchform';
import { HubModel } from './model';
import { requestAPI } from './request';
import { paraviewLines } from './snippets';
import { FINAL_STATES, STATE_TONE } from './tokens';

/**
 * Servers: every server the hub knows, however it was started; the live ones on top, the
 * stopped and failed ones in a history that stays folded unless opened; and a launch form.
 */
export class ServersSection {
  readonly node: HTMLElement;

  constructor(
    private model: HubModel,
    private actions: Actions
  ) {
    this._list = h('div', { class: 'pc-list', 'data-list': 'live' });
    this._pastList = h('div', { class: 'pc-list', 'data-list': 'history' });
    this._pastTitle = h('summary', { class: 'pc-history-title' }, 'History');
    this._past = h(
      'details',
      { class: 'pc-history', 'data-section': 'history' },
      this._pastTitle,
      this._pastList
    );
    this._refusals = h('div', { class: 'pc-refusals', 'data-list': 'refusals' });
    this._refusals.hidden = true;
    this._session = select('session', []);
    this._form = new LaunchForm(model, actions, this._session);
    model.event.connect((_, ev) => this._walltime(ev));
    model.event.connect((_, ev) => this._refused(ev));
    this.node = h(
      'details',
      { class: 'pc-section', 'data-section': 'servers', open: true },
      h('summary', { class: 'pc-section-title' }, 'Servers'),
      this._list,
      this._refusals,
      this._past,
      this._form.node
    );
  }

  render(): void {
    const m = this.model;
    syncOptions(
      this._session,
      m.sessions.map(s => s.name),
      m.selected
    );
    this._form.render();
    const newest = (a: IServerInfo, b: IServerInfo) => b.created - a.created;
    const all = [...m.servers.values()];
    const live = all.filter(s => !FINAL_STATES.has(s.state)).sort(newest);
    // The history is ordered by when each server ended, the latest first.
    const past = all
      .filter(s => FINAL_STATES.has(s.state))
      .sort((a, b) => b.updated - a.updated || newest(a, b));
    this._list.replaceChildren(
      ...(live.length
        ? live.map(s => this._card(s))
        : [h('div', { class: 'pc-empty' }, all.length ? 'None running.' : 'No server yet.')])
    );
    this._past.hidden = !past.length;
    this._past.dataset.count = String(past.length);
    this._pastTitle.textContent = `History (${past.length} stopped or failed)`;
    this._pastList.replaceChildren(...past.map(s => this._card(s)));
  }

  private _card(s: IServerInfo): HTMLElement {
    const final = FINAL_STATES.has(s.state);
    const pv = paraviewLines(s);
    return h(
      'div',
      {
        class: `pc-card${final ? ' pc-mod-final' : ''}`,
        'data-server': s.id,
        'data-state': s.state
      },
      h(
        'div',
        { class: 'pc-card-head' },
        h(
          'span',
          { class: `pc-badge pc-tone-${STATE_TONE[s.state] ?? 'idle'}`, 'data-badge': s.state },
          s.state
        ),
        h('span', { class: 'pc-name pc-ellipsis', title: s.id }, s.id)
      ),
      h(
        'div',
        { class: 'pc-muted' },
        `${s.kind} · ${s.mode} · ${s.launcher} · session ${s.session}`
      ),
      final
        ? null
        : h(
            'dl',
            { class: 'pc-facts' },
            h('dt', {}, 'Identity'),
            h('dd', { class: 'pc-ellipsis', title: s.peer ?? '' }, s.peer ?? '–'),
            h('dt', {}, 'Address'),
            h('dd', { class: 'pc-mono' }, s.where ?? s.host ?? '–'),
            s.local
              ? [
                  h('dt', {}, 'Local'),
                  h('dd', { class: 'pc-mono', title: 'point your client here' }, s.local)
                ]
              : null,
            s.mode === 'reverse'
              ? [
                  h('dt', {}, 'Phoned'),
                  h(
                    'dd',
                    {},
                    `${s.attempts} time${s.attempts === 1 ? '' : 's'}, last ${ago(s.last_phone_home)}`
                  )
                ]
              : [h('dt', {}, 'Reached'), h('dd', {}, ago(s.last_phone_home))],
            s.streams ? [h('dt', {}, 'Streams'), h('dd', {}, `${s.streams} open`)] : null,
            s.job_id ? [h('dt', {}, 'Job'), h('dd', { class: 'pc-mono' }, s.job_id)] : null,
            s.program_version
              ? [
                  h('dt', {}, 'Version'),
                  h('dd', { class: 'pc-mono', 'data-fact': 'version' }, s.program_version)
                ]
              : null,
            s.ends_at
              ? [
                  h('dt', {}, 'Time left'),
                  h(
                    'dd',
                    {
                      'data-time-left': Math.round(s.ends_at - Date.now() / 1000),
                      title: `the job's time limit ends at ${new Date(s.ends_at * 1000).toLocaleTimeString()}`
                    },
                    timeLeft(s.ends_at)
                  )
                ]
              : null
          ),
      // Before ParaView's own handshake fails obscurely: which versions, what to do.
      s.version_check && !final
        ? h(
            'div',
            { class: 'pc-warning', role: 'alert', 'data-warning': 'version' },
            s.version_check
          )
        : null,
      s.reason ? h('div', { class: 'pc-reason', title: s.reason }, s.reason) : null,
      h(
        'div',
        { class: 'pc-actions' },
        final
          ? null
          : button('Insert code', () => this.actions.insertCode(s), {
              'data-action': 'insert',
              title: 'Put the code that reaches this server into the active notebook'
            }),
        s.kind === 'builtin' && s.local && !final
          ? button('Open view', () => this.actions.openView(s), {
              'data-action': 'view',
              title: 'The live picture in a tab (drag rotates, the wheel zooms)'
            })
          : null,
        isWebKind(s.kind) && s.local && !final
          ? button('Open', () => this.actions.openApp(s), {
              'data-action': 'open-app',
              title: "The app in a tab, through the tunnel and Jupyter's authenticated proxy"
            })
          : null,
        pv
          ? button('Copy ParaView line', () => this.actions.copyParaview(s), {
              'data-action': 'copy-paraview',
              title: `pvpython or ParaView's Python shell: ${pv.python}\nthe GUI: ${pv.gui}`
            })
          : null,
        button('Logs', () => void this.actions.logs(s.id), { 'data-action': 'logs' }),
        s.ends_at && !final && s.mode === 'reverse'
          ? button('Resubmit', () => void this._resubmit(s.id), {
              title: 'a new job for this server: it re-attaches to the same local endpoint',
              'data-action': 'resubmit'
            })
          : null,
        final
          ? null
          : button('Stop', () => void this.actions.stop(s.id), {
              class: 'jp-mod-warn',
              'data-action': 'stop'
            })
      )
    );
  }

  /** A warning that a job's time limit nears its end, with the way out; and a server read
   * again when the hub has compared its ParaView version with this host's (after it phoned
   * home: pvpython is asked off the hub's loop). */
  private _walltime(ev: HubEvent): void {
    if (ev.event === 'walltime') {
      const minutes = Math.max(1, Math.round(ev.left / 60));
      Notification.warning(
        `Server ${ev.server_id}: its job ${ev.job_id} reaches its time limit in ${minutes} min`,
        {
          autoClose: false,
          actions: [{ label: 'Resubmit', callback: () => void this._resubmit(ev.server_id) }]
        }
      );
      void this.model.reloadServer(ev.server_id).catch(() => undefined);
    } else if (ev.event === 'resubmitted' || ev.event === 'version_check') {
      void this.model.reloadServer(ev.server_id).catch(() => undefined);
    }
  }

  /**
   * The last refusals in full: the notification is cut at JupyterLab's 140 characters, which
   * loses the reason (a RADIUS server's Reply-Message, the debugger's fix) at its end.
   */
  private _refused(ev: HubEvent): void {
    if (ev.event !== 'refused') {
      return;
    }
    this._recent = [ev, ...this._recent].slice(0, REFUSALS_SHOWN);
    const sessionName = (id: string) =>
      this.model.sessions.find(x => x.id === id || x.name === id)?.name ?? id;
    this._refusals.hidden = false;
    this._refusals.replaceChildren(
      h(
        'div',
        { class: 'pc-refusals-head' },
        h('span', { class: 'pc-refusals-title' }, 'Refused lately'),
        button('Clear', () => this._clearRefusals(), { 'data-action': 'clear-refusals' })
      ),
      ...this._recent.map(r =>
        h(
          'div',
          { class: 'pc-refusal', 'data-peer': r.peer ?? '', title: r.reason },
          h(
            'div',
            { class: 'pc-muted' },
            `${r.peer ? `${r.peer} at ${r.where}` : r.where} · session ${sessionName(r.session)} · ${ago(r.at)}`
          ),
          h('div', { class: 'pc-refusal-reason' }, r.explain || r.reason)
        )
      )
    );
  }

  private _clearRefusals(): void {
    this._recent = [];
    this._refusals.hidden = true;
    this._refusals.replaceChildren();
  }

  private async _resubmit(id: string): Promise<void> {
    try {
      const info = await requestAPI<IServerInfo>(`servers/${encodeURIComponent(id)}/resubmit`, {
        method: 'POST'
      });
      Notification.info(`Server ${id} resubmitted (${info.state})`, { autoClose: 4000 });
      await this.model.reloadServer(id);
    } catch (error) {
      Notification.error(`Resubmitting ${id} failed: ${(error as Error).message}`, {
        autoClose: 8000
      });
    }
  }

  private _list: HTMLElement;
  private _refusals: HTMLElement;
  private _recent: Extract<HubEvent, { event: 'refused' }>[] = [];
  private _past: HTMLDetailsElement;
  private _pastTitle: HTMLElement;
  private _pastList: HTMLElement;
  private _session: HTMLSelectElement;
  private _form: LaunchForm;
}

/** How many refusals the section keeps on show, the latest first. */
const REFUSALS_SHOWN = 5;

/** `12 min`, `45 s`: what is left until `endsAt` (epoch seconds), by this browser's clock. */
function timeLeft(endsAt: number): string {
  const left = Math.max(0, Math.round(endsAt - Date.now() / 1000));
  if (left >= 3600) {
    return `${Math.floor(left / 3600)} h ${Math.floor((left % 3600) / 60)} min`;
  }
  return left >= 60 ? `${Math.floor(left / 60)} min` : `${left} s`;
}
