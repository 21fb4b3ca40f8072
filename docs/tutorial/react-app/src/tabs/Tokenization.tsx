import { useMemo, useState } from "react";
import { facts } from "./facts";
import { encode, pieces, renderChat } from "./tokenizer";
import { Src, visible } from "./common";

const SAMPLES = ["你好，世界！", "MiniMind 是一个中文小模型。", "<think>\n想一想\n</think>\n<answer>\n好\n</answer>", "😀 emoji"];

/** 分词: the real model/tokenizer.json running in the browser; any text shows its real ids and pieces. */
export function TokenizationTab() {
  const [text, setText] = useState(SAMPLES[0]);
  const [chat, setChat] = useState(false);
  const [genPrompt, setGenPrompt] = useState(true);
  const shown = useMemo(
    () => (chat ? renderChat([{ role: "user", content: text }], { add_generation_prompt: genPrompt }) : text),
    [text, chat, genPrompt]);
  const ps = useMemo(() => pieces(shown), [shown]);
  const chars = [...shown].length;
  return (
    <section>
      <h2>分词 / Tokenization</h2>
      <p>
        浏览器里运行的就是仓库的 <Src path="model/tokenizer.json" />（字节级 BPE，词表 {facts.tokenizer.vocab_size}），
        由 @huggingface/tokenizers 加载、对话模板由 @huggingface/jinja 渲染；单元测试逐条核对它与 Python{" "}
        <Src path="model/checkpoint.py" symbol="load_tokenizer" /> 给出的 id 相同（{facts.tokenizer.parity.length} 条文本 +{" "}
        {facts.tokenizer.chat.length} 段对话）。
      </p>
      <div className="row">
        {SAMPLES.map((s) => <button key={s} className="btn" onClick={() => setText(s)}>{visible(s).slice(0, 14)}</button>)}
      </div>
      <textarea aria-label="text to tokenize" value={text} onChange={(e) => setText(e.target.value)} rows={3}
        style={{ width: "100%", marginTop: 8 }} />
      <div className="row">
        <label><input type="checkbox" checked={chat} onChange={(e) => setChat(e.target.checked)} /> 套用对话模板 (apply_chat_template)</label>
        {chat ? <label><input type="checkbox" checked={genPrompt} onChange={(e) => setGenPrompt(e.target.checked)} /> add_generation_prompt</label> : null}
      </div>
      {chat ? <pre className="card">{shown}</pre> : null}
      <p data-testid="token-count">{ps.length} 个 token，{chars} 个字符（{chars ? (chars / Math.max(ps.length, 1)).toFixed(2) : 0} 字符/token）</p>
      <div className="tokens" data-testid="token-ids">
        {ps.map((p, i) => (
          <span key={i} className={p.id < 11 ? "tok special" : "tok"} title={`id ${p.id} · byte-level ${p.token}`}>
            <span className="tok-text">{visible(p.text)}</span>
            <span className="tok-id">{p.id}</span>
          </span>
        ))}
      </div>
      <p className="muted mono">ids: {JSON.stringify(encode(shown).ids)}</p>
      <div className="card">
        <h3>单 id 的标签 / single-id tags</h3>
        <table className="tbl">
          <tbody>
            {facts.tokenizer.added_tokens.map((t) => (
              <tr key={t.id}><td className="mono">{t.content}</td><td>{t.id}</td><td>{t.special ? "special" : "普通标签（解码时保留）"}</td></tr>
            ))}
          </tbody>
        </table>
      </div>
    </section>
  );
}
