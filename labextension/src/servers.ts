import { Notification } from '@jupyterlab/apputils';

import { HubEvent, ILauncherInfo, IServerInfo } from './api';
import { Actions, ILaunch } from './actions';
import {
  ago,
  button,
  field,
  h,
  input,
  parseOptions,
  select,
  splitCommand,
  syncOptions
} from './dom';
import { HubModel } from './model';
import { requestAPI } from './request';
import { FINAL_STATES, LAUNCHERS, MODES, SERVER_KINDS, STATE_TONE } from './tokens';

/** Servers: every server the hub knows, however it was started, and a launch form. */
export class ServersSection {
  readonly node: HTMLElement;

  constructor(
    private model: HubModel,
    private actions: Actions
  ) {
    this._list = h('div', { class: 'pc-list' });
    this._session = select('session', []);
    this._launcher = select('launcher', LAUNCHERS, 'local');
    this._launcherOptions = h('textarea', {
      name: 'launcher_options',
      class: 'jp-mod-styled',
      rows: 2
    });
    this._launcher.addEventListener('change', () => this._describeLauncher());
    model.event.connect((_, ev) => this._walltime(ev));
    this.node = h(
      'details',
      { class: 'pc-section', 'data-section': 'servers', open: true },
      h('summary', { class: 'pc-section-title' }, 'Servers'),
      this._list,
      this._form()
    );
  }

  render(): void {
    const m = this.model;
    syncOptions(
      this._session,
      m.sessions.map(s => s.name),
      m.selected
    );
    // The launchers the hub runs itself ('manual' is the "Copy agent command" button).
    const runs = m.launchers.filter(l => l.hub_runs).map(l => l.name);
    syncOptions(this._launcher, runs.length ? runs : LAUNCHERS, 'local');
    this._describeLauncher();
    // Live ones first, then the newest.
    const servers = [...m.servers.values()].sort(
      (a, b) =>
        Number(FINAL_STATES.has(a.state)) - Number(FINAL_STATES.has(b.state)) ||
        b.created - a.created
    );
    this._list.replaceChildren(
      ...(servers.length
        ? servers.map(s => this._card(s))
        : [h('div', { class: 'pc-empty' }, 'No server yet.')])
    );
  }

  private _card(s: IServerInfo): HTMLElement {
    const final = FINAL_STATES.has(s.state);
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
      h(
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
        s.ends_at && !final
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
      s.reason ? h('div', { class: 'pc-reason', title: s.reason }, s.reason) : null,
      h(
        'div',
        { class: 'pc-actions' },
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

  /** A warning that a job's time limit nears its end, with the way out. */
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
    } else if (ev.event === 'resubmitted') {
      void this.model.reloadServer(ev.server_id).catch(() => undefined);
    }
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

  /** The chosen launcher's options, as the hub describes them, in the options box's hints. */
  private _describeLauncher(): void {
    const info: ILauncherInfo | undefined = this.model.launchers.find(
      l => l.name === this._launcher.value
    );
    const options = info?.options ?? [];
    const box = this._launcherOptions;
    box.placeholder = options.length
      ? options.map(o => `${o.key}=…${o.required ? ' (required)' : ''}`).join(', ')
      : 'key=value, one a line';
    box.title = [info?.summary ?? '', ...options.map(o => `${o.key}: ${o.help}`)]
      .filter(line => line)
      .join('\n');
    box.dataset.launcher = this._launcher.value;
  }

  private _form(): HTMLElement {
    const kind = select('kind', SERVER_KINDS, 'builtin');
    const launcher = this._launcher;
    const mode = select('mode', MODES, 'reverse');
    const options = h('textarea', {
      name: 'options',
      class: 'jp-mod-styled',
      rows: 2,
      placeholder: 'key=value, one a line'
    });
    const launcherOptions = this._launcherOptions;
    const command = input('command', {
      placeholder: 'command kind: python3 -m http.server {port}'
    });
    const spec = (): ILaunch | null => {
      try {
        return {
          kind: kind.value,
          launcher: launcher.value,
          session: this._session.value || 'default',
          mode: mode.value,
          options: parseOptions(options.value),
          launcher_options: parseOptions(launcherOptions.value),
          command: splitCommand(command.value)
        };
      } catch (error) {
        options.setCustomValidity((error as Error).message);
        options.reportValidity();
        return null;
      }
    };
    const launch = () => {
      const s = spec();
      if (s) {
        void this.actions.launch(s);
      }
    };
    const agent = () => {
      const s = spec();
      if (s) {
        void this.actions.agentCommand({
          kind: s.kind,
          session: s.session,
          options: s.options,
          command: s.command
        });
      }
    };
    options.addEventListener('input', () => options.setCustomValidity(''));
    return h(
      'details',
      { class: 'pc-form', 'data-form': 'launch' },
      h('summary', {}, 'Launch a server'),
      h(
        'div',
        { class: 'pc-grid' },
        field('Kind', kind),
        field('Launcher', launcher),
        field('Session', this._session),
        field('Mode', mode)
      ),
      field('Options', options),
      field('Launcher options', launcherOptions),
      field('Command', command),
      h(
        'div',
        { class: 'pc-actions' },
        button('Launch', launch, { class: 'jp-mod-accept' }),
        button('Copy agent command', agent, {
          title:
            'A shell line that starts this server by hand on a remote host; it phones home here'
        })
      )
    );
  }

  private _list: HTMLElement;
  private _session: HTMLSelectElement;
  private _launcher: HTMLSelectElement;
  private _launcherOptions: HTMLTextAreaElement;
}

/** `12 min`, `45 s`: what is left until `endsAt` (epoch seconds), by this browser's clock. */
function timeLeft(endsAt: number): string {
  const left = Math.max(0, Math.round(endsAt - Date.now() / 1000));
  if (left >= 3600) {
    return `${Math.floor(left / 3600)} h ${Math.floor((left % 3600) / 60)} min`;
  }
  return left >= 60 ? `${Math.floor(left / 60)} min` : `${left} s`;
}
