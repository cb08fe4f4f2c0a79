import { JupyterFrontEnd } from '@jupyterlab/application';
import { MainAreaWidget } from '@jupyterlab/apputils';
import type { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import { IServerInfo } from './api';
import { h } from './dom';
import { eventsURL } from './request';

/** One render-protocol frame (paraconnect/render/_protocol.py): u32 header length, u32
 * payload length (0 from a client), the JSON header. */
function frameOf(header: Record<string, unknown>): Uint8Array {
  const text = new TextEncoder().encode(JSON.stringify(header));
  const buf = new Uint8Array(8 + text.length);
  const dv = new DataView(buf.buffer);
  dv.setUint32(0, text.length);
  dv.setUint32(4, 0);
  buf.set(text, 8);
  return buf;
}

function parse(data: ArrayBuffer): [Record<string, any>, Uint8Array<ArrayBuffer>] {
  const dv = new DataView(data);
  const hlen = dv.getUint32(0);
  const plen = dv.getUint32(4);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(data, 8, hlen)));
  return [header, new Uint8Array(data, 8 + hlen, plen)];
}

/**
 * A built-in renderer's live picture: the tab speaks the render protocol to the server's local
 * endpoint through the server extension's view websocket (a relay on the Jupyter machine, where
 * that endpoint is). Its own scene of the dataset; frames streamed as the scene changes, at most
 * three unacknowledged, so the picture never lags behind a backlog; smaller, coarser frames
 * while dragging and a full one when the pointer is up. Drag rotates, the wheel zooms, the
 * picture follows the tab's size.
 */
export class ServerView extends Widget {
  constructor(
    readonly server: IServerInfo,
    readonly datasetName = 'wavelet'
  ) {
    super();
    this.addClass('pc-view');
    this._img = h('img', { class: 'pc-view-frame', alt: `live picture of ${server.id}` });
    this._status = h('div', { class: 'pc-view-status' }, 'connecting…');
    this.node.append(this._img, this._status);
    this.node.dataset.frames = '0';
    this._img.draggable = false;
    this._img.addEventListener('pointerdown', e => this._down(e));
    this._img.addEventListener('pointermove', e => this._move(e));
    this._img.addEventListener('pointerup', () => this._up());
    this._img.addEventListener('wheel', e => this._wheel(e), { passive: false });
  }

  protected onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    if (this._ws) {
      return;
    }
    const ws = new WebSocket(eventsURL(`servers/${encodeURIComponent(this.server.id)}/view`));
    ws.binaryType = 'arraybuffer';
    ws.onopen = () => {
      const [w, h] = this._size();
      this._send({ op: 'hello', v: 1 });
      this._send({ op: 'load', dataset: this.datasetName, id: 1 });
      this._send({ op: 'resize', w, h });
      this._stream();
    };
    ws.onmessage = msg => this._message(msg);
    ws.onclose = ev => {
      if (!this.isDisposed && !this._error) {
        this._status.textContent = `closed (${ev.code}${ev.reason ? `: ${ev.reason}` : ''})`;
      }
    };
    this._ws = ws;
  }

  protected onResize(msg: Widget.ResizeMessage): void {
    super.onResize(msg);
    const [w, h] = this._size();
    this._send({ op: 'resize', w, h });
    this._stream();
  }

  /** Frames as the scene changes; while dragging, smaller (the render server's rule for the
   * view's size: half of each side above 640x480; the picture is stretched) and coarser, so
   * that they keep up with the pointer. */
  private _stream(): void {
    this._send({
      op: 'stream',
      fps: 0,
      format: 'jpeg',
      quality: 90,
      drag_quality: 60,
      drag_scale: 'auto',
      window: 3,
      id: 2
    });
  }

  dispose(): void {
    this._ws?.close();
    if (this._img.src) {
      URL.revokeObjectURL(this._img.src);
    }
    super.dispose();
  }

  private _send(header: Record<string, unknown>): void {
    const ws = this._ws;
    if (ws && ws.readyState === WebSocket.OPEN) {
      ws.send(frameOf(header));
    }
  }

  private _message(msg: MessageEvent): void {
    const [header, payload] = parse(msg.data as ArrayBuffer);
    if (header.op === 'error') {
      this._error = String(header.message);
      this._status.textContent = `the renderer failed: ${this._error}`;
      return;
    }
    if (header.op !== 'frame' || !header.stream) {
      return;
    }
    this._arrived(header.input);
    // After a release, only the still and what follows: no older picture steps back in.
    if (this._still !== null && (header.input ?? -1) < this._still) {
      this._send({ op: 'ack', n: header.n });
      return;
    }
    const url = URL.createObjectURL(new Blob([payload], { type: `image/${header.format}` }));
    this._img.onload = () => {
      if (this._shown) {
        URL.revokeObjectURL(this._shown);
      }
      this._shown = url;
      this.node.dataset.frames = String(Number(this.node.dataset.frames) + 1);
      this._send({ op: 'ack', n: header.n });
    };
    this._img.src = url;
    this._status.textContent = `${this.server.id} · drag to rotate, wheel to zoom`;
  }

  /** What the pointer did since the last animation frame: one camera request. */
  private _queue(azimuth: number, elevation: number, zoom: number): void {
    const p = this._pending;
    p.azimuth += azimuth;
    p.elevation += elevation;
    p.zoom *= zoom;
    if (!this._scheduled) {
      this._scheduled = true;
      requestAnimationFrame(() => this._flush());
    }
  }

  /** Send what the pointer did, unless four requests no arrived frame shows yet are out
   * (then the next frame's arrival sends it): the pointer never outruns the chain. */
  private _flush(force = false): void {
    this._scheduled = false;
    const p = this._pending;
    if (p.azimuth === 0 && p.elevation === 0 && p.zoom === 1) {
      return;
    }
    // A request no frame answered within a second (a restarted stream) stops counting.
    const now = performance.now();
    while (this._ahead.length && now - this._ahead[0][1] > 1000) {
      this._ahead.shift();
    }
    if (!force && this._ahead.length >= 4) {
      return;
    }
    this._send({ op: 'camera', ...p, interactive: true, id: ++this._input });
    this._ahead.push([this._input, now]);
    this._pending = { azimuth: 0, elevation: 0, zoom: 1 };
  }

  private _arrived(input: number | undefined): void {
    if (input === undefined || input === null) {
      return;
    }
    while (this._ahead.length && this._ahead[0][0] <= input) {
      this._ahead.shift();
    }
    this._flush();
  }

  private _size(): [number, number] {
    const r = this.node.getBoundingClientRect();
    return [
      Math.max(64, Math.min(4096, Math.round(r.width) || 640)),
      Math.max(64, Math.min(4096, Math.round(r.height - 24) || 480))
    ];
  }

  private _down(e: PointerEvent): void {
    this._drag = [e.clientX, e.clientY];
    this._still = null;
    this._ahead = [];
    this._img.setPointerCapture?.(e.pointerId);
  }

  private _move(e: PointerEvent): void {
    if (!this._drag) {
      return;
    }
    const [x, y] = this._drag;
    this._drag = [e.clientX, e.clientY];
    this._queue(-(e.clientX - x) * 0.5, (e.clientY - y) * 0.5, 1);
  }

  private _up(): void {
    this._drag = null;
    this._flush(true);
    this._still = ++this._input;
    this._send({ op: 'camera', interactive: false, id: this._still }); // the full-quality still
  }

  private _wheel(e: WheelEvent): void {
    e.preventDefault();
    this._still = null;
    this._queue(0, 0, e.deltaY < 0 ? 1.1 : 1 / 1.1);
    // Wheel steps are a drag too: the full-size still once they stop.
    clearTimeout(this._wheelEnd);
    this._wheelEnd = setTimeout(() => this._up(), 250);
  }

  private _img: HTMLImageElement;
  private _status: HTMLElement;
  private _ws: WebSocket | null = null;
  private _shown: string | null = null;
  private _scheduled = false;
  private _drag: [number, number] | null = null;
  private _pending = { azimuth: 0, elevation: 0, zoom: 1 };
  private _error: string | null = null;
  private _input = 1 << 20; // camera request ids: the frames say which one they show
  private _still: number | null = null;
  private _ahead: [number, number][] = []; // camera requests no arrived frame shows yet: [id, sent at]
  private _wheelEnd: ReturnType<typeof setTimeout> | undefined = undefined;
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
