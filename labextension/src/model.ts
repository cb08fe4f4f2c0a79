import { ISignal, Signal } from '@lumino/signaling';

import {
  HubEvent,
  ICert,
  IHubInfo,
  ILauncherInfo,
  ILaunchOptions,
  IServerInfo,
  ISessionDetail,
  ISessionInfo
} from './api';
import { ApiError, eventsURL, requestAPI } from './request';
import { EVENTS_ENDPOINT, HUB_RETRY_MS } from './tokens';

/**
 * Everything the panel shows. The hub is the only source of truth: on (re)load and whenever the
 * events websocket (re)connects, the whole state is read again from REST, so servers started
 * from a notebook or the command line show up and nothing is lost on page reload; events then
 * patch it in between.
 */
export class HubModel {
  sessions: ISessionInfo[] = [];
  details = new Map<string, ISessionDetail>();
  friends = new Map<string, ICert[]>();
  servers = new Map<string, IServerInfo>();
  /** The launchers the hub has registered (GET /hub); empty until it answers. */
  launchers: ILauncherInfo[] = [];
  /** What the launch form offers (GET /launch-options); null until the hub answers. */
  launchOptions: ILaunchOptions | null = null;
  /** The session the active notebook uses (its code names it), and that notebook's path. */
  followed: { session: string; notebook: string } | null = null;
  selected: string | null = null;
  error: string | null = null;
  live = false;

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** Every event, after the model has applied it (for notifications). */
  get event(): ISignal<this, HubEvent> {
    return this._event;
  }

  get session(): ISessionDetail | null {
    return this.selected ? (this.details.get(this.selected) ?? null) : null;
  }

  select(name: string | null): void {
    this.selected = name;
    this._changed.emit();
  }

  /**
   * The active notebook names `sessions` in its code (first first): select the first one the
   * hub knows, and say so. A choice the user makes in the panel stands until the notebook
   * changes or another notebook becomes active.
   */
  follow(notebook: string | null, sessions: string[]): void {
    const known = sessions.find(name => this.sessions.some(s => s.name === name));
    const next = notebook && known ? { session: known, notebook } : null;
    if (next?.session === this.followed?.session && next?.notebook === this.followed?.notebook) {
      return;
    }
    this.followed = next;
    if (next) {
      this.selected = next.session;
    }
    this._changed.emit();
  }

  async reload(): Promise<void> {
    try {
      const [sessions, servers, hub, launchOptions] = await Promise.all([
        requestAPI<ISessionInfo[]>('sessions'),
        requestAPI<IServerInfo[]>('servers'),
        requestAPI<IHubInfo>('hub'),
        requestAPI<ILaunchOptions>('launch-options')
      ]);
      this.sessions = sessions;
      this.launchers = hub.launchers ?? [];
      this.launchOptions = launchOptions;
      this.servers = new Map(servers.map(s => [s.id, s]));
      if (!this.selected || !sessions.some(s => s.name === this.selected)) {
        this.selected = sessions.length ? sessions[0].name : null;
      }
      await Promise.all(sessions.map(s => this.reloadSession(s.name, false)));
      this.error = null;
    } catch (error) {
      if (error instanceof ApiError && error.status === 503) {
        // The hub itself is down (the reason is in the message); the extension restarts
        // it: look again shortly, so the panel recovers without a page reload.
        this.error = error.message; // 'the paraconnect hub does not run: <why>'
        this._retry();
      } else {
        this.error = `cannot reach the paraconnect hub: ${(error as Error).message}`;
      }
    }
    this._changed.emit();
  }

  private _retry(): void {
    if (this._disposed || this._retrying !== null) {
      return;
    }
    this._retrying = setTimeout(() => {
      this._retrying = null;
      void this.reload();
    }, HUB_RETRY_MS);
  }

  async reloadSession(name: string, emit = true): Promise<void> {
    const [detail, friends] = await Promise.all([
      requestAPI<ISessionDetail>(`sessions/${encodeURIComponent(name)}`),
      requestAPI<ICert[]>(`sessions/${encodeURIComponent(name)}/friends`)
    ]);
    this.details.set(name, detail);
    this.friends.set(name, friends);
    if (emit) {
      this._changed.emit();
    }
  }

  async reloadServer(id: string): Promise<void> {
    const info = await requestAPI<IServerInfo>(`servers/${encodeURIComponent(id)}`);
    this.servers.set(id, info);
    this._changed.emit();
  }

  /** Open the events websocket; reconnect with a growing delay, reloading on each connect. */
  connect(): void {
    if (this._disposed) {
      return;
    }
    const ws = new WebSocket(eventsURL(EVENTS_ENDPOINT));
    this._socket = ws;
    ws.onopen = () => {
      this._delay = 1000;
      this.live = true;
      void this.reload();
    };
    ws.onmessage = msg => {
      try {
        void this._apply(JSON.parse(msg.data) as HubEvent);
      } catch (error) {
        console.warn('paraconnect: bad event', msg.data, error);
      }
    };
    ws.onclose = () => {
      this.live = false;
      this._changed.emit();
      if (!this._disposed) {
        setTimeout(() => this.connect(), this._delay);
        this._delay = Math.min(this._delay * 2, 30000);
      }
    };
  }

  dispose(): void {
    this._disposed = true;
    this._socket?.close();
    if (this._retrying !== null) {
      clearTimeout(this._retrying);
    }
  }

  private async _apply(ev: HubEvent): Promise<void> {
    switch (ev.event) {
      case 'server': {
        const known = this.servers.get(ev.server_id);
        if (known) {
          known.state = ev.state;
          known.reason = ev.reason;
          known.updated = ev.at;
          this._changed.emit();
          // The whole record: fresh addresses, attempts, last seen.
          await this.reloadServer(ev.server_id).catch(() => undefined);
        } else {
          // A server launched elsewhere (a notebook, the CLI): its session may have just
          // started listening too.
          await this.reload();
        }
        break;
      }
      case 'phone_home':
      case 'hung_up':
        await this.reloadServer(ev.server_id).catch(() => undefined);
        break;
      case 'connection':
        // The hub counts the open streams (servers' `streams`): read it again, so a reload
        // shows the same number as live updates did.
        if (ev.kind === 'data' && this.servers.has(ev.server_id)) {
          await this.reloadServer(ev.server_id).catch(() => undefined);
        }
        break;
      case 'credentials':
        if (ev.change === 'session_created') {
          await this.reload();
        } else {
          await this.reloadSession(ev.session).catch(() => undefined);
        }
        break;
      case 'hub':
        // The extension says its hub failed (REST answers 503 with the reason until the
        // restarted hub serves) or serves again: read everything anew either way.
        await this.reload();
        break;
      default:
        break;
    }
    this._event.emit(ev);
  }

  private _changed = new Signal<this, void>(this);
  private _event = new Signal<this, HubEvent>(this);
  private _socket: WebSocket | null = null;
  private _delay = 1000;
  private _retrying: ReturnType<typeof setTimeout> | null = null;
  private _disposed = false;
}
