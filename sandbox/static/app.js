// The moodring sandbox page: plays the members of a local Discord server (sandbox/page.py has the API).
// State lives in `view`; every change announced on the websocket re-reads the server state and the messages.
"use strict";

const view = {
  state: null, // GET /sandbox/api/state
  channelId: null,
  memberId: null,
  replyTo: null, // message id the next message replies to
  command: null, // {name, options} while the command form is open
  picks: new Map(), // "messageId customId" -> the values picked in that select, kept across redraws, as Discord does
  toNewest: false, // the next draw scrolls to the newest message (set on sending, as Discord jumps to the present)
};

const $ = (selector) => document.querySelector(selector);

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

// ------------------------------------------------------------------ talking to the server

async function api(path, body) {
  const response = await fetch("/sandbox/api/" + path, body === undefined ? {} : {
    method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify(body),
  });
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  if (data.warning) notify(data.warning);
  return data;
}

function notify(text) {
  const notice = $("#notice");
  notice.textContent = text;
  notice.hidden = false;
  clearTimeout(notify.timer);
  notify.timer = setTimeout(() => { notice.hidden = true; }, 6000);
}

async function act(path, body) {
  try {
    return await api(path, body);
  } catch (error) {
    notify(error.message);
    return null;
  }
}

function listen() {
  const socket = new WebSocket(`ws://${location.host}/sandbox/ws`);
  socket.onmessage = () => refresh();
  socket.onclose = () => setTimeout(listen, 1000);
  socket.onopen = () => refresh();
}

async function refresh() {
  view.state = await api("state");
  view.channelId ??= view.state.channels[0]?.id;
  view.memberId ??= view.state.members.find((m) => m.role === "member")?.id ?? view.state.members[0]?.id;
  drawSidebar();
  await drawMessages();
}

// ------------------------------------------------------------------ names and text

function userName(user) {
  if (!user) return "someone";
  return user.global_name || user.username;
}

function nameOf(id) {
  const state = view.state;
  if (id === state.bot.id) return state.bot.name;
  return state.members.find((m) => m.id === id)?.name ?? "unknown";
}

// A role's name for a role mention (<@&id>).
function roleName(id) {
  return view.state.roles.find((r) => r.id === id)?.name ?? "unknown-role";
}

// Discord's timestamp markup, <t:unix> and <t:unix:style>, in the viewer's time zone (t: time, else date and time).
function timestampText(part) {
  const [, seconds, style] = part.match(/^<t:(-?\d+)(?::([tTdDfFR]))?>$/);
  const moment = new Date(Number(seconds) * 1000);
  return /^[tT]$/.test(style || "") ? moment.toLocaleTimeString() : moment.toLocaleString();
}

// Discord's markdown, the part the bot uses: **bold**, `code`, > quotes, <@mentions>, <@&role mentions>,
// <#channels> and <t:timestamps>.
function renderMarkdown(text) {
  const node = el("div", {class: "content"});
  for (const [index, line] of (text || "").split("\n").entries()) {
    if (index) node.append(el("br"));
    const quoted = line.startsWith("> ");
    const target = quoted ? el("blockquote") : node;
    const parts = (quoted ? line.slice(2) : line).split(/(\*\*[^*]+\*\*|`[^`]+`|<@!?\d+>|<@&\d+>|<#\d+>|<t:-?\d+(?::[tTdDfFR])?>)/);
    for (const part of parts) {
      if (/^\*\*.+\*\*$/.test(part)) target.append(el("b", {text: part.slice(2, -2)}));
      else if (/^`.+`$/.test(part)) target.append(el("code", {text: part.slice(1, -1)}));
      else if (/^<@!?\d+>$/.test(part)) target.append(el("span", {class: "mention", text: "@" + nameOf(part.replace(/\D/g, ""))}));
      else if (/^<@&\d+>$/.test(part)) target.append(el("span", {class: "mention", text: "@" + roleName(part.replace(/\D/g, ""))}));
      else if (/^<t:/.test(part)) target.append(el("span", {class: "timestamp", text: timestampText(part)}));
      else if (/^<#\d+>$/.test(part)) {
        const channel = view.state.channels.find((c) => c.id === part.replace(/\D/g, ""));
        target.append(el("span", {class: "mention", text: "#" + (channel?.name ?? "unknown")}));
      } else if (part) target.append(part);
    }
    if (quoted) node.append(target);
  }
  return node;
}

// A message's text with mentions as names, for one-line previews.
function plainText(text) {
  return (text || "").replace(/<@!?(\d+)>/g, (_, id) => "@" + nameOf(id)).replace(/<@&(\d+)>/g, (_, id) => "@" + roleName(id));
}

// "@Name" typed in the composer becomes a real mention, <@id>, as Discord's client does.
function withMentions(text) {
  const people = [view.state.bot, ...view.state.members];
  for (const person of people) text = text.split("@" + person.name).join(`<@${person.id}>`);
  return text;
}

// ------------------------------------------------------------------ the sidebar

function drawSidebar() {
  const {state} = view;
  $("#guild-name").textContent = state.guild.name;
  const status = $("#bot-status");
  status.className = state.bot.online ? "online" : "offline";
  status.textContent = `${state.bot.name} ${state.bot.online ? "online" : "offline"} · ${state.commands.length} commands`;
  const activity = $("#bot-activity");  // the bot's status (its presence), e.g. how far its first training is
  activity.textContent = state.bot.online ? state.bot.status : "";
  activity.hidden = !activity.textContent;
  const channels = $("#channels");
  channels.replaceChildren(...state.channels.map((channel) => el("li", {},
    el("button", {
      class: channel.id === view.channelId ? "current" : "",
      "data-channel-id": channel.id,
      text: "# " + channel.name,
      onclick: () => { view.channelId = channel.id; refresh(); },
    }))));
  const member = $("#member");
  member.replaceChildren(...state.members.map((m) => el("option", {
    value: m.id, selected: m.id === view.memberId, text: m.role === "member" ? m.name : `${m.name} (${m.role})`,
  })));
  $("#channel-header").textContent = "# " + (state.channels.find((c) => c.id === view.channelId)?.name ?? "");
}

// ------------------------------------------------------------------ messages

// Keeps the list at the newest message when it was there (or the member just sent something), else where it was.
async function drawMessages() {
  const box = $("#messages");
  const messages = await api(`channels/${view.channelId}/messages?viewer=${view.memberId}`);
  const follow = view.toNewest || box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  view.toNewest = false;
  box.replaceChildren(...messages.map(drawMessage));
  if (follow) box.scrollTop = box.scrollHeight;
}

// After sending: to the newest message now, and with the next draw (which brings what was sent, and the answer).
function jumpToNewest() {
  const box = $("#messages");
  box.scrollTop = box.scrollHeight;
  view.toNewest = true;
}

function drawMessage(message) {
  const ephemeral = (message.flags & 64) !== 0;
  const loading = (message.flags & 128) !== 0;
  const isBot = message.author.bot;
  const node = el("article", {class: "message" + (ephemeral ? " ephemeral" : ""), "data-id": message.id},
    drawActions(message),
    message.referenced_message ? el("div", {class: "reference",
      text: `↪ ${userName(message.referenced_message.author)}: ${plainText(message.referenced_message.content).slice(0, 80)}`}) : null,
    message.interaction_metadata ? el("div", {class: "used", text: usedLabel(message.interaction_metadata)}) : null,
    el("div", {class: "meta"},
      el("span", {class: "author", text: userName(message.author)}),
      isBot || message.author.system ? el("span", {class: "bot-tag", text: isBot ? "APP" : "SYSTEM"}) : null,
      " ", el("time", {text: new Date(message.timestamp).toLocaleTimeString()})),
    loading ? el("div", {class: "loading", text: `${userName(message.author)} is thinking…`}) : null,
    message.content ? renderMarkdown(message.content) : null,
    ...(message.embeds || []).map((embed) => drawEmbed(embed, message)),
    ...imagesNotInEmbeds(message).map((a) => el("img", {class: "attachment", src: a.url, alt: a.filename})),
    drawComponents(message),
    drawReactions(message),
    ephemeral ? el("div", {class: "ephemeral-note", text: "👁 Only you can see this"}) : null);
  return node;
}

// "Sam used /moodring retention" for a slash command (with its subcommand), "Sam used Analyze emotions" for a menu.
function usedLabel(metadata) {
  const what = !metadata.name ? "a button" : metadata.command_type === 1 ? "/" + metadata.name : metadata.name;
  return `${userName(metadata.user)} used ${what}`;
}

function drawActions(message) {
  const menus = commandsShown().filter((c) => c.type === 3);
  return el("div", {class: "actions"},
    el("button", {type: "button", class: "reply", text: "Reply", onclick: () => startReply(message)}),
    ...menus.map((menu) => el("button", {type: "button", class: "menu", "data-menu": menu.name, text: menu.name,
      onclick: () => act("menu", {message_id: message.id, user_id: view.memberId, name: menu.name})})));
}

function attachmentFor(message, url) {
  if (!url?.startsWith("attachment://")) return null;
  return (message.attachments || []).find((a) => a.filename === url.slice("attachment://".length));
}

function imagesNotInEmbeds(message) {
  const used = new Set((message.embeds || []).map((e) => attachmentFor(message, e.image?.url)?.id));
  return (message.attachments || []).filter((a) => !used.has(a.id) && (a.content_type || "").startsWith("image/"));
}

function drawEmbed(embed, message) {
  const colour = embed.color !== undefined ? "#" + embed.color.toString(16).padStart(6, "0") : "#1e1f22";
  const image = embed.image ? (attachmentFor(message, embed.image.url)?.url ?? embed.image.url) : null;
  return el("div", {class: "embed", style: `border-left-color: ${colour}`},
    embed.title ? el("div", {class: "embed-title", text: embed.title}) : null,
    embed.description ? renderMarkdown(embed.description) : null,
    embed.fields?.length ? el("div", {class: "embed-fields"}, ...embed.fields.map((field) =>
      el("div", {class: "embed-field" + (field.inline ? " inline" : "")},
        el("div", {class: "embed-field-name", text: field.name}),
        el("div", {class: "embed-field-value"}, ...field.value.split("\n").map((line) =>
          el("div", {class: "line"}, renderMarkdown(line))))))) : null,
    image ? el("img", {class: "embed-image", src: image, alt: "chart"}) : null,
    embed.footer ? el("div", {class: "embed-footer", text: embed.footer.text}) : null);
}

function drawComponents(message) {
  const rows = message.components || [];
  if (!rows.length) return null;
  const use = (custom_id, values) =>
    act("components", {message_id: message.id, user_id: view.memberId, custom_id, values});
  return el("div", {class: "components"}, ...rows.flatMap((row) => (row.components || []).map((c) => {
    if (c.type === 2) {
      return el("button", {type: "button", class: `style-${c.style}`, disabled: c.disabled, "data-custom-id": c.custom_id,
        text: c.label || c.emoji?.name || "…", onclick: () => use(c.custom_id)});
    }
    if (c.type === 3) return drawSelect(message, c, use);
    return null;
  })));
}

// A string select as its component says: one pick, or (max_values > 1) up to max_values of them, at least
// min_values. The picks stay shown after the bot's answer redraws the message, until the message changes them.
function drawSelect(message, component, use) {
  const key = `${message.id} ${component.custom_id}`;
  const min = component.min_values ?? 1, max = component.max_values ?? 1;
  const placeholder = component.placeholder || "Choose…";
  const picked = view.picks.get(key) ?? component.options.filter((o) => o.default).map((o) => o.value);
  const options = component.options.map((o) => el("option", {value: o.value, selected: picked.includes(o.value),
    text: (o.emoji?.name ? o.emoji.name + " " : "") + o.label + (o.description ? ` · ${o.description}` : "")}));
  if (max === 1) {
    return el("select", {"data-custom-id": component.custom_id, disabled: component.disabled,
      onchange: (event) => {
        view.picks.set(key, [event.target.value]);
        use(component.custom_id, [event.target.value]);
      }},
    el("option", {value: "", disabled: true, selected: !picked.length, text: placeholder}), ...options);
  }
  const select = el("select", {"data-custom-id": component.custom_id, multiple: true, disabled: component.disabled,
    size: Math.min(options.length, 6), "aria-label": placeholder,
    onchange: () => {
      const values = [...select.selectedOptions].map((o) => o.value);
      if (values.length > max || values.length < min) {
        notify(`${placeholder}: pick up to ${max}` + (min ? ` (at least ${min})` : "") + ".");
        for (const option of select.options) option.selected = picked.includes(option.value);
        return;
      }
      picked.splice(0, picked.length, ...values);
      view.picks.set(key, values);
      use(component.custom_id, values);
    }}, ...options);
  return el("label", {class: "select"}, el("span", {text: `${placeholder} (up to ${max})`}), select);
}

function drawReactions(message) {
  if (!message.reactions?.length) return null;
  return el("div", {class: "reactions"}, ...message.reactions.map((r) =>
    el("span", {class: "reaction", title: r.me ? "the bot reacted" : "", text: `${r.emoji.name} ${r.count}`})));
}

// ------------------------------------------------------------------ the composer: messages and replies

function startReply(message) {
  view.replyTo = message.id;
  $("#replying-to").textContent = userName(message.author);
  $("#replying").hidden = false;
  $("#composer").focus();
}

function stopReply() {
  view.replyTo = null;
  $("#replying").hidden = true;
}

async function sendMessage(event) {
  event.preventDefault();
  const composer = $("#composer");
  const text = composer.value.trim();
  if (!text) return;
  if (text.startsWith("/")) {
    const match = commandPaths({hidden: true}).find((c) => c.name === text.slice(1).trim());
    if (match) openCommand(match);
    else notify(`No command ${text}: pick one from the list.`);
    return;
  }
  const body = {channel_id: view.channelId, author_id: view.memberId, content: withMentions(text)};
  if (view.replyTo) body.reply_to = view.replyTo;
  if (await act("messages", body)) {
    composer.value = "";
    stopReply();
    jumpToNewest();
  }
}

// ------------------------------------------------------------------ slash commands, from what the bot registered

// The commands Discord lists for the member played: not those whose default_member_permissions they lack (unless
// they are an administrator). Hiding is all it is: a member who types a hidden command's name still runs it, and
// the bot's own check answers, as it must for a server whose admins let everyone see the command.
function commandsShown() {
  const member = view.state.members.find((m) => m.id === view.memberId);
  const has = BigInt(member?.permissions ?? 0);
  const administrator = 1n << 3n;
  return view.state.commands.filter((c) => {
    if (c.default_member_permissions === null || c.default_member_permissions === undefined) return true;
    const needed = BigInt(c.default_member_permissions);
    return (has & administrator) !== 0n || (needed !== 0n && (has & needed) === needed);
  });
}

// Every runnable command path ("emotion", "moodring channel", ...) with the options it takes: of the commands
// shown to the member, or of all the bot registered (`hidden` too: for a name typed in full).
function commandPaths({hidden = false} = {}) {
  const paths = [];
  const walk = (prefix, description, options) => {
    const subs = (options || []).filter((o) => o.type === 1 || o.type === 2);
    if (!subs.length) paths.push({name: prefix, description, options: options || []});
    for (const sub of subs) walk(`${prefix} ${sub.name}`, sub.description, sub.options);
  };
  const commands = hidden ? view.state.commands : commandsShown();
  for (const command of commands.filter((c) => c.type === 1)) walk(command.name, command.description, command.options);
  return paths.sort((a, b) => a.name.localeCompare(b.name));
}

function showCommandList() {
  const text = $("#composer").value;
  const list = $("#command-list");
  if (!text.startsWith("/") || view.command) {
    list.hidden = true;
    return;
  }
  const typed = text.slice(1).trim();
  const matches = commandPaths().filter((c) => c.name.startsWith(typed) || typed.startsWith(c.name));
  list.replaceChildren(...matches.map((command) => el("li", {},
    el("button", {type: "button", "data-command": command.name, onclick: () => openCommand(command)},
      "/" + command.name, el("span", {class: "description", text: command.description})))));
  list.hidden = !matches.length;
}

function optionInput(option) {
  const name = option.name;
  if (option.choices?.length) {
    return el("select", {name}, el("option", {value: "", text: ""}),
      ...option.choices.map((c) => el("option", {value: JSON.stringify(c.value), text: c.name})));
  }
  if (option.type === 5) {
    return el("select", {name}, el("option", {value: "", text: ""}),
      el("option", {value: "true", text: "true"}), el("option", {value: "false", text: "false"}));
  }
  if (option.type === 7) {
    return el("select", {name}, el("option", {value: "", text: ""}),
      ...view.state.channels.map((c) => el("option", {value: c.id, text: "#" + c.name})));
  }
  if (option.type === 8) {
    return el("select", {name}, el("option", {value: "", text: ""}),
      ...view.state.roles.map((r) => el("option", {value: r.id, text: "@" + r.name})));
  }
  const numeric = option.type === 4 || option.type === 10;
  return el("input", {name, type: numeric ? "number" : "text", placeholder: option.description, required: option.required});
}

function openCommand(command) {
  view.command = command;
  $("#command-list").hidden = true;
  const form = $("#command-form");
  form.replaceChildren(
    el("div", {class: "command-name", text: "/" + command.name},
      el("span", {class: "option-description", text: command.description})),
    ...command.options.map((option) => el("label", {},
      option.name + (option.required ? " *" : ""), optionInput(option))),
    el("button", {type: "submit", text: "Run"}),
    el("button", {type: "button", text: "Cancel", onclick: closeCommand}));
  form.hidden = false;
  (form.querySelector("input, select") || form.querySelector("button")).focus();
}

function closeCommand() {
  view.command = null;
  $("#command-form").hidden = true;
  $("#composer").value = "";
}

async function runCommand(event) {
  event.preventDefault();
  const options = {};
  for (const option of view.command.options) {
    const field = event.target.elements[option.name];
    if (!field || field.value === "") continue;
    options[option.name] = option.choices?.length ? JSON.parse(field.value) : field.value;
  }
  const body = {channel_id: view.channelId, user_id: view.memberId, name: view.command.name, options};
  if (await act("commands", body)) {
    closeCommand();
    jumpToNewest();
  }
}

// ------------------------------------------------------------------ start

document.addEventListener("DOMContentLoaded", () => {
  $("#message-form").addEventListener("submit", sendMessage);
  $("#command-form").addEventListener("submit", runCommand);
  $("#composer").addEventListener("input", showCommandList);
  $("#composer").addEventListener("keydown", (event) => { if (event.key === "Escape") closeCommand(); });
  $("#cancel-reply").addEventListener("click", stopReply);
  $("#member").addEventListener("change", (event) => { view.memberId = event.target.value; refresh(); });
  listen();
});
