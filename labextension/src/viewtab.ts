import { JupyterFrontEnd } from '@jupyterlab/application';
import { MainAreaWidget } from '@jupyterlab/apputils';
import type { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import { IServerInfo } from './api';
import { h } from './dom';
import { eventsURL } from './request';

interface ICamera {
  azimuth: number;
  elevation: number;
  zoom: number;
}

/**
 * A built-in renderer's live picture: JPEG frames from the server extension's view websocket
 * (it is the renderer's client on the Jupyter machine, where the server's local endpoint is).
 * Drag rotates, the wheel zooms, the picture follows the tab's size. One request is in flight
 * at a time; what the user does meanwhile is summed into the next one.
 */
export class ServerView extends Widget {
  constructor(readonly server: IServerInfo) {
    super();
    this.addClass('pc-view');
    this._img = h('img', { class: 'pc-view-frame', alt: `live picture of ${server.id}` });
    this._status = h('div', { class: 'pc-view-status' }, 'connecting…');
    this.node.append(this._img, this._status);
    this.node.dataset.frames = '0';
    this._img.draggable = false;
    this._img.addEventListener('pointerdown', e => this._down(e));
    this._img.addEventListener('pointermove', e => this._move(e));
    this._img.addEventListener('pointerup', () => (this._drag = null));
    this._img.addEventListener('wheel', e => this._wheel(e), { passive: false });
  }

  protected onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    if (this._ws) {
      return;
    }
    const [w, h] = this._size();
    const url = eventsURL(`servers/${encodeURIComponent(this.server.id)}/view`);
    const ws = new WebSocket(`${url}${url.includes('?') ? '&' : '?'}w=${w}&h=${h}`);
    ws.binaryType = 'blob';
    ws.onmessage = msg => this._message(msg);
    ws.onclose = ev => {
      if (!this.isDisposed && !this._error) {
        this._status.textContent = `closed (${ev.code}${ev.reason ? `: ${ev.reason}` : ''})`;
      }
    };
    this._ws = ws;
    this._busy = true; // the first frame comes unasked
  }

  protected onResize(msg: Widget.ResizeMessage): void {
    super.onResize(msg);
    this._resize = true;
    this._flush();
  }

  dispose(): void {
    this._ws?.close();
    if (this._img.src) {
      URL.revokeObjectURL(this._img.src);
    }
    super.dispose();
  }

  private _message(msg: MessageEvent): void {
    if (typeof msg.data === 'string') {
      this._error = JSON.parse(msg.data).error ?? msg.data;
      this._status.textContent = `the renderer failed: ${this._error}`;
      return;
    }
    const previous = this._img.src;
    this._img.src = URL.createObjectURL(msg.data as Blob);
    if (previous) {
      URL.revokeObjectURL(previous);
    }
    this.node.dataset.frames = String(Number(this.node.dataset.frames) + 1);
    this._status.textContent = `${this.server.id} · drag to rotate, wheel to zoom`;
    this._busy = false;
    this._flush();
  }

  /** Send what piled up while a frame was on its way: one request. */
  private _flush(): void {
    const ws = this._ws;
    if (!ws || ws.readyState !== WebSocket.OPEN || this._busy) {
      return;
    }
    const cam = this._pending;
    const moved = cam.azimuth !== 0 || cam.elevation !== 0 || cam.zoom !== 1;
    if (!moved && !this._resize) {
      return;
    }
    const request: Record<string, unknown> = {};
    if (moved) {
      request.camera = { ...cam };
    }
    if (this._resize) {
      const [w, h] = this._size();
      request.resize = { w, h };
    }
    this._pending = { azimuth: 0, elevation: 0, zoom: 1 };
    this._resize = false;
    this._busy = true;
    ws.send(JSON.stringify(request));
  }

  private _size(): [number, number] {
    const r = this.node.getBoundingClientRect();
    return [
      Math.max(64, Math.round(r.width) || 640),
      Math.max(64, Math.round(r.height - 24) || 480)
    ];
  }

  private _down(e: PointerEvent): void {
    this._drag = [e.clientX, e.clientY];
    this._img.setPointerCapture?.(e.pointerId);
  }

  private _move(e: PointerEvent): void {
    if (!this._drag) {
      return;
    }
    const [x, y] = this._drag;
    this._drag = [e.clientX, e.clientY];
    this._pending.azimuth -= (e.clientX - x) * 0.5;
    this._pending.elevation += (e.clientY - y) * 0.5;
    this._flush();
  }

  private _wheel(e: WheelEvent): void {
    e.preventDefault();
    this._pending.zoom *= e.deltaY < 0 ? 1.1 : 1 / 1.1;
    this._flush();
  }

  private _img: HTMLImageElement;
  private _status: HTMLElement;
  private _ws: WebSocket | null = null;
  private _busy = false;
  private _resize = false;
  private _drag: [number, number] | null = null;
  private _pending: ICamera = { azimuth: 0, elevation: 0, zoom: 1 };
  private _error: string | null = null;
}

/** Open (or show again) the main-area tab with server `s`'s live picture. */
export function openView(app: JupyterFrontEnd, s: IServerInfo): void {
  const id = `paraconnect-view-${s.id}`;
  const open = [...app.shell.widgets('main')].find(w => w.id === id);
  if (open) {
    app.shell.activateById(id);
    return;
  }
  const widget = new MainAreaWidget({ content: new ServerView(s) });
  widget.id = id;
  widget.title.label = `${s.id} (view)`;
  widget.title.caption = `live picture of ${s.id}, session ${s.session}`;
  widget.title.closable = true;
  app.shell.add(widget, 'main');
  app.shell.activateById(id);
}
